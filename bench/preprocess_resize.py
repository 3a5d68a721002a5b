"""Benchmark: ways to turn a 640x480 camera frame into model pixels, for speed AND for parity.

    python bench/preprocess_resize.py --size 224 --model bench/work/lite0-224/tflite-int8/model.tflite
    python bench/preprocess_resize.py --size 96 --model RUN/export/tflite-int8/model.tflite --data DATA/test

Every option does what edgecls.preprocess.resize does (centre crop to the model's aspect ratio, resize to the
model's size, BGR frame in, RGB pixels out) and is timed on real photos (scikit-image: chelsea, coffee,
astronaut, rocket) as 640x480 (and 320x240: the reduced capture mode) BGR frames, median of --repeat runs.

OpenCV runs with one thread (cv2.setNumThreads(1)), as edgecls.preprocess sets it.
Parity: max and mean absolute pixel difference against Pillow bicubic without a pre-shrink (what training
used before), over the photos. Accuracy effect: with --model, top-1 agreement with the reference option on the
photos (ImageNet models) and, with --data (a labelled ImageFolder, e.g. Fashion-MNIST test images), accuracy when
each image is shown as a 640x480 camera frame (upscaled to 480x480, centred on a grey 640x480 frame).

Writes bench/results/preprocess_resize-<size>.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from edgecls.preprocess import centre_crop_box

RESULTS = Path(__file__).resolve().parent / "results"
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def frames(size: tuple[int, int]) -> list[np.ndarray]:
    import cv2
    from skimage import data

    out = []
    for name in PHOTOS:
        photo = getattr(data, name)()
        out.append(cv2.cvtColor(cv2.resize(photo, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR))
    return out


def pillow(resample: Image.Resampling, gap: float | None = None) -> Callable[[np.ndarray, int], np.ndarray]:
    def run(frame: np.ndarray, side: int) -> np.ndarray:
        height, width = frame.shape[:2]
        box = centre_crop_box(width, height, side, side, 1.0)
        image = Image.fromarray(frame[..., ::-1])
        return np.asarray(image.resize((side, side), resample=resample, box=box, reducing_gap=gap))
    return run


def pillow_bgr(resample: Image.Resampling, gap: float | None = None) -> Callable[[np.ndarray, int], np.ndarray]:
    """Resize the BGR frame as it is (Pillow calls it RGB), swap channels on the small result (what edgecls does)."""
    def run(frame: np.ndarray, side: int) -> np.ndarray:
        height, width = frame.shape[:2]
        box = centre_crop_box(width, height, side, side, 1.0)
        small = np.asarray(Image.fromarray(frame).resize((side, side), resample=resample, box=box, reducing_gap=gap))
        return np.ascontiguousarray(small[..., ::-1])
    return run


def opencv(interpolation: int, preshrink: bool = False) -> Callable[[np.ndarray, int], np.ndarray]:
    import cv2

    def run(frame: np.ndarray, side: int) -> np.ndarray:
        height, width = frame.shape[:2]
        left, top, right, bottom = centre_crop_box(width, height, side, side, 1.0)
        crop = frame[top:bottom, left:right]
        factor = (bottom - top) // side
        if preshrink and factor >= 2:
            crop = cv2.resize(crop, ((right - left) // factor, (bottom - top) // factor), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(cv2.resize(crop, (side, side), interpolation=interpolation), cv2.COLOR_BGR2RGB)
    return run


def edgecls_resize(frame: np.ndarray, side: int) -> np.ndarray:
    """What the camera calls for every frame (BGR in, the model's RGB pixels out)."""
    from edgecls.preprocess import prepare_pixels

    return prepare_pixels(frame, _META.setdefault(side, _meta(side)), bgr=True)


_META: dict = {}


def _meta(side: int) -> object:
    from edgecls.meta import ModelMeta

    return ModelMeta("bench", (side, side), ["x"])


def options() -> dict[str, Callable[[np.ndarray, int], np.ndarray]]:
    import cv2

    bicubic, bilinear, box = Image.Resampling.BICUBIC, Image.Resampling.BILINEAR, Image.Resampling.BOX
    return {
        "pillow bicubic (reference)": pillow(bicubic),
        "pillow bicubic, BGR kept, swap after": pillow_bgr(bicubic),
        "pillow bicubic, reducing_gap 1.0 (reduce() box pre-shrink)": pillow_bgr(bicubic, 1.0),
        "pillow bicubic, reducing_gap 2.0": pillow_bgr(bicubic, 2.0),
        "pillow bilinear": pillow_bgr(bilinear),
        "pillow box (area)": pillow_bgr(box),
        "opencv INTER_AREA": opencv(cv2.INTER_AREA),
        "opencv INTER_LINEAR": opencv(cv2.INTER_LINEAR),
        "opencv INTER_CUBIC": opencv(cv2.INTER_CUBIC),
        "opencv AREA pre-shrink + INTER_CUBIC": opencv(cv2.INTER_CUBIC, preshrink=True),
        "opencv AREA pre-shrink + INTER_LINEAR": opencv(cv2.INTER_LINEAR, preshrink=True),
        "edgecls.preprocess (this checkout)": edgecls_resize,
    }


def timed(run: Callable[[np.ndarray, int], np.ndarray], shots: list[np.ndarray], side: int, repeat: int) -> float:
    for frame in shots:
        run(frame, side)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for frame in shots:
            run(frame, side)
        samples.append((time.perf_counter() - start) * 1e3 / len(shots))
    return statistics.median(samples)


def camera_frame(path: Path) -> np.ndarray:
    """A labelled image shown to a 640x480 camera: upscaled to 480x480, centred on grey, BGR."""
    image = Image.open(path).convert("RGB").resize((480, 480), Image.Resampling.BICUBIC)
    frame = np.full((480, 640, 3), 128, np.uint8)
    frame[:, 80:560] = np.asarray(image)
    return np.ascontiguousarray(frame[..., ::-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--model", type=Path, help="an exported artifact: top-1 agreement (and accuracy with --data)")
    parser.add_argument("--data", type=Path, help="a labelled ImageFolder (class folders): accuracy per option")
    parser.add_argument("--limit", type=int, default=1000, help="images of --data at most (stratified by name order)")
    args = parser.parse_args()
    import cv2

    from edgecls.fsutil import write_json

    cv2.setNumThreads(1)  # as edgecls.preprocess does: one thread, the other cores belong to inference
    side, table = args.size, options()
    shots = {"640x480": frames((640, 480)), "320x240": frames((320, 240))}
    reference = {k: [table["pillow bicubic (reference)"](f, side) for f in v] for k, v in shots.items()}
    classifier = labelled = None
    if args.model:
        from edgecls.runtime import Classifier

        classifier = Classifier(args.model)
    if args.data:
        from edgecls.data.folder import scan_class_folders

        classes, paths, labels = scan_class_folders(args.data)
        picked = np.linspace(0, len(paths) - 1, min(args.limit, len(paths))).astype(int)
        labelled = [(camera_frame(paths[i]), labels[i]) for i in picked]
    records, rows = [], []
    for name, run in table.items():
        record: dict = {"option": name}
        for capture, batch in shots.items():
            outputs = [run(f, side) for f in batch]
            diffs = [np.abs(o.astype(int) - r.astype(int)) for o, r in zip(outputs, reference[capture])]
            record[capture] = {"ms_p50": round(timed(run, batch, side, args.repeat), 3),
                               "max_abs_diff": int(max(d.max() for d in diffs)), "mean_abs_diff": round(float(np.mean(diffs)), 3)}
        if classifier is not None:
            ref = [classifier.predict_arrays(p[None].astype(np.float32))[0] for p in reference["640x480"]]
            got = [classifier.predict_arrays(run(f, side)[None].astype(np.float32))[0] for f in shots["640x480"]]
            record["photos_top1_agreement"] = float(np.mean([r.argmax() == g.argmax() for r, g in zip(ref, got)]))
            record["photos_max_score_diff"] = round(float(max(np.abs(r - g).max() for r, g in zip(ref, got))), 4)
        if classifier is not None and labelled:
            predicted = classifier.predict_arrays(np.stack([run(f, side) for f, _ in labelled]).astype(np.float32)).argmax(axis=1)
            record["data_accuracy"] = round(float(np.mean(predicted == np.asarray([y for _, y in labelled]))), 4)
            record["data_images"] = len(labelled)
        records.append(record)
        big, small = record["640x480"], record["320x240"]
        extra = f" | {record.get('photos_top1_agreement', '-')} | {record.get('data_accuracy', '-')}"
        rows.append(f"| {name} | {big['ms_p50']:.3f} | {small['ms_p50']:.3f} | {big['max_abs_diff']} / {big['mean_abs_diff']:.2f}{extra} |")
        print(rows[-1], flush=True)
    command = f"python bench/preprocess_resize.py --size {side} --repeat {args.repeat}" + (f" --model {args.model}" if args.model else "") \
        + (f" --data {args.data} --limit {args.limit}" if args.data else "")
    write_json(RESULTS / f"preprocess_resize-{side}.json", {"command": command, "machine": f"{os.uname().machine}, {os.cpu_count()} cores",
                                                           "load_average": [round(x, 2) for x in os.getloadavg()],
                                                           "date": time.strftime("%Y-%m-%d"), "results": records})
    print()
    print("| option | 640x480 ms p50 | 320x240 ms p50 | max / mean abs diff vs reference (640x480) | top-1 agreement (photos) "
          "| accuracy (--data) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
