"""Runs a third-party client on an edgecls artifact, inside the clients venv (scripts/clients_env.sh).

Usage: python client_probe.py mediapipe|model_api MODEL IMAGES.npy
IMAGES.npy holds uint8 (N, h, w, 3) RGB pixels at the model's input size. Prints one JSON object:
{"client": ..., "results": [[index, name, score], ...]} with each image's top-1, or {"error": "..."}.
Imports nothing from edgecls: this is what a user of that client would write.
"""
from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np


def mediapipe_top1(model: str, images: np.ndarray) -> list[list[Any]]:
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=model), max_results=1)
    results = []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image in images:
            frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
            best = classifier.classify(frame).classifications[0].categories[0]
            results.append([int(best.index), best.category_name, float(best.score)])
    return results


def model_api_top1(model: str, images: np.ndarray) -> list[list[Any]]:
    from model_api.models import Model

    classifier = Model.create_model(model, device="CPU")  # no configuration: everything comes from the file
    results = []
    for image in images:
        best = classifier(np.ascontiguousarray(image[..., ::-1])).top_labels[0]  # Model API takes BGR frames, as cv2.imread gives
        results.append([int(best.id), best.name, float(best.confidence)])
    return results


def main() -> None:
    client, model, images_path = sys.argv[1:4]
    images = np.load(images_path)
    try:
        results = {"mediapipe": mediapipe_top1, "model_api": model_api_top1}[client](model, images)
    except Exception as exc:  # noqa: BLE001 - report whatever the client raised, as a user would see it
        print(json.dumps({"client": client, "error": f"{type(exc).__name__}: {exc}"}))
        return
    print(json.dumps({"client": client, "results": results}))


if __name__ == "__main__":
    main()
