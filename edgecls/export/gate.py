"""The accuracy gate of quantized exports, the numbers it reads, and what to try when it fails.

Every int8 and dynamic artifact is run through its real runtime on held-out images that played no
part in calibration or tuning, and compared with the Keras model: top-1 agreement must reach
`min_agreement`, and (on labelled images) the accuracy drop must stay within `max_drop`. Either may be
None (off); the defaults live in formats.DEFAULTS. Unlabelled held-out images (zoo models) are judged
by agreement alone.

The agreement floor counts the images Keras is decisive about (its top-1 probability leads the
second by at least DECISIVE_MARGIN): a near-tie flips between any two runtimes, float ones included,
and says nothing about the artifact. With fewer than MIN_DECISIVE such images it counts them all.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecls.export.formats import DEFAULTS, FORMATS

WARMUP_RUNS = 3
DECISIVE_MARGIN = 0.05  # Keras top-1 minus top-2 probability
MIN_DECISIVE = 10
NEAR_MISS_DROP, NEAR_MISS_AGREEMENT = 0.04, 0.1  # beyond these a looser threshold is no advice: the artifact is broken


@dataclass(frozen=True)
class Gate:
    max_drop: float | None = DEFAULTS.max_drop
    min_agreement: float | None = DEFAULTS.min_agreement

    def failures(self, agreement: Agreement, drop: float | None) -> list[str]:
        """Why an artifact with this agreement and accuracy drop (None: unlabelled) fails, if it does."""
        found = []
        if self.min_agreement is not None and agreement.gated < self.min_agreement:
            found.append(f"top-1 agreement with Keras {agreement.gated:.3f} ({agreement.basis}) is below --min-agreement "
                         f"{self.min_agreement:g}")
        if self.max_drop is not None and drop is not None and drop > self.max_drop + 1e-9:
            found.append(f"accuracy drop {drop * 100:.2f} points exceeds --max-drop {self.max_drop * 100:.2f} points")
        return found


def scores_of(path: Path, fmt: str, images: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, str]:
    """Probabilities of an artifact on uint8 images through edgecls.runtime (OpenVINO at f32), and what it ran as."""
    from edgecls.export.validate import run_backend
    from edgecls.runtime import load_backend

    options: dict[str, Any] = {"precision_hint": "f32"} if fmt == "openvino" else {}
    backend = load_backend(path, device="cpu", threads=threads, **options)
    try:
        return run_backend(backend, images), backend.precision_ran
    finally:
        backend.close()


@dataclass(frozen=True)
class Agreement:
    """Top-1 agreement with Keras: on every image, and on the images Keras is decisive about (what the floor reads)."""

    overall: float
    decisive: float | None  # None: no decisive image
    decisive_images: int
    images: int

    @property
    def gated(self) -> float:
        return self.decisive if self.decisive is not None and self.decisive_images >= MIN_DECISIVE else self.overall

    @property
    def basis(self) -> str:
        if self.decisive is not None and self.decisive_images >= MIN_DECISIVE:
            return f"on the {self.decisive_images} of {self.images} images where Keras' top-1 leads by >= {DECISIVE_MARGIN:g}"
        return f"on all {self.images} images"


def agreement_and_drop(scores: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> tuple[Agreement, float | None]:
    """Top-1 agreement with the reference (Keras) and, with labels, the accuracy drop (reference minus artifact)."""
    same = scores.argmax(1) == reference.argmax(1)
    top2 = np.sort(reference, axis=1)[:, -2:] if reference.shape[1] > 1 else np.zeros((len(reference), 2))
    decisive = top2[:, 1] - top2[:, 0] >= DECISIVE_MARGIN
    agreement = Agreement(float(same.mean()) if len(same) else 0.0, float(same[decisive].mean()) if decisive.any() else None,
                          int(decisive.sum()), len(same))
    if labels is None:
        return agreement, None
    return agreement, float(np.mean(reference.argmax(1) == labels) - np.mean(scores.argmax(1) == labels))


def latency_ms(path: Path, fmt: str, image: np.ndarray, runs: int = DEFAULTS.latency_runs, threads: int | None = None) -> float:
    """Median batch-1 latency (ms) of an artifact on this machine through edgecls.runtime, after a short warm-up."""
    from edgecls.runtime import load_backend

    options: dict[str, Any] = {"precision_hint": "f32"} if fmt == "openvino" else {}
    backend = load_backend(path, device="cpu", threads=threads, **options)
    try:
        batch = image[None].astype(np.float32)
        for _ in range(WARMUP_RUNS):
            backend.run(batch)
        times = []
        for _ in range(max(1, runs)):
            start = time.perf_counter()
            backend.run(batch)
            times.append(time.perf_counter() - start)
        return round(float(np.median(times)) * 1000, 3)
    finally:
        backend.close()


def advice(fmt: str, precision: str, gate: Gate, drop: float | None, agreement: float, images: int,
           calibration_images: int | None, fallback: Any = None, fallback_off: bool = False) -> list[str]:
    """What to try when `fmt` `precision` failed the gate: most direct first."""
    tips = []
    if precision == "int8" and FORMATS[fmt].fallback is None:
        tips.append(f"{fmt} is full-integer only (no float fallback): use a quantization-friendly backbone (efficientnet_lite0, "
                    "mobilenet_v2: ReLU6, no swish or squeeze-excite), or export --target tflite, which can keep layers float")
    elif precision == "int8" and fallback_off:
        tips.append("let the fallback keep the most sensitive layers float (drop --fallback-layers 0 / --fallback-tries 0)")
    elif fallback is not None:
        candidate = fallback.candidate
        kept = f"{len(candidate.float_nodes)} layers float" if candidate else "no candidate"
        tips.append(f"the fallback stopped ({fallback.outcome}; best: {kept}): give it more room with --fallback-layers, "
                    "--fallback-tries or --fallback-seconds")
    if precision == "dynamic":
        tips.append("export --precision fp16 (float16 weights) or int8 (calibrated activations) instead")
    if drop is not None and gate.max_drop is not None and drop > gate.max_drop:
        if images and 1 / images > gate.max_drop and drop * images <= 3.5:  # a few images: noise as much as quantization
            tips.append(f"one image is {100 / images:.2f} points of these {images} held-out images: judge on more "
                        "(--holdout-size, a larger test split)")
        if drop <= gate.max_drop + NEAR_MISS_DROP:
            tips.append(f"accept a larger drop: --max-drop {round(drop + 0.005, 2):g} (or --max-drop none)")
    if gate.min_agreement is not None and gate.min_agreement - NEAR_MISS_AGREEMENT <= agreement < gate.min_agreement:
        tips.append(f"accept lower agreement: --min-agreement {np.floor(agreement * 100) / 100:g}")
    if precision == "int8" and calibration_images is not None and calibration_images < DEFAULTS.calib_size:
        tips.append(f"calibrate on more images (--calib-size, now {calibration_images}; or a --calib folder of a few hundred)")
    if precision == "int8" and FORMATS[fmt].fallback is not None:
        tips.append("train a quantization-friendly backbone (efficientnet_lite0, mobilenet_v2: ReLU6, no swish or squeeze-excite)")
    if precision == "int8":
        tips.append("or export --precision fp16 for a float model")
    return tips
