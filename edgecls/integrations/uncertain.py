"""Frames kept for retraining: what the model was unsure about, saved at full resolution with a JSON sidecar.

`edgecls camera --save-uncertain DIR` keeps a frame when its own top-1 probability is below
`--threshold`, or its top-1 minus top-2 is below `--margin`, at most `--save-rate` frames a second,
as

    DIR/.unlabelled/20261130T071512345Z-000042.jpg    the frame as captured (JPEG quality 95)
    DIR/.unlabelled/20261130T071512345Z-000042.json   scores, top-k, time, model, why it was kept

The folder is hidden on purpose: `edgecls train --data DIR` skips hidden folders and files without an
image suffix, so neither the unlabelled frames nor the sidecars become a class or a training image.
Labelling a frame is moving it: `mv DIR/.unlabelled/X.jpg DIR/sneaker/` (or DIR/train/sneaker/ in a
pre-split tree); the next `edgecls train --data DIR` uses it.

Bounded on disk: past `--save-max` frames the oldest this tool wrote are removed with their sidecars.
Only files it wrote are ever removed: an image counts as its own when its name has the pattern above
and a sidecar beside it says so; sidecars whose image was moved out (labelled) are removed at the next
start. The sidecar is written before its image (both through a temp file and a rename), so a crash
leaves at most a sidecar, never an image nothing claims. JPEG encoding and writing happen on a worker
thread (edgecls.integrations.worker); a full queue drops the frame and counts it.
"""
from __future__ import annotations

import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecls.errors import ConfigError, require
from edgecls.fsutil import atomic_path, check_outputs, sweep_stale_temps, write_json
from edgecls.integrations.worker import BoundedWorker

if TYPE_CHECKING:
    from edgecls.camera.loop import FrameResult
    from edgecls.runtime.base import Backend

log = logging.getLogger("edgecls.camera.uncertain")

UNLABELLED = ".unlabelled"
SIDECAR_KIND = "edgecls uncertain frame"
NAME = re.compile(r"^\d{8}T\d{9}Z-\d{6,}$")  # the stem of every file this module writes
JPEG_QUALITY = 95


class UncertainKeeper:
    """A ResultSink (edgecls.integrations) that keeps uncertain frames for labelling (see the module docstring)."""

    name = "save_uncertain"

    def __init__(self, folder: str | Path, threshold: float = 0.0, margin: float = 0.0, rate: float = 1.0, max_files: int = 1000,
                 queue_size: int = 4, clock: Callable[[], float] = time.monotonic) -> None:
        if threshold <= 0 and margin <= 0:
            raise ConfigError("--save-uncertain keeps nothing without --threshold or --margin",
                              "Add e.g. --threshold 0.6 (keep frames scored below 0.6) or --margin 0.2")
        if not 0 <= threshold <= 1 or not 0 <= margin <= 1:
            raise ConfigError(f"--threshold {threshold:g} / --margin {margin:g} must lie in [0, 1]", "Use probabilities, e.g. 0.6")
        if not 0 < rate <= 1000:
            raise ConfigError(f"--save-rate {rate:g} must be above 0 and at most 1000 frames a second", "Use e.g. --save-rate 0.5")
        if max_files < 1:
            raise ConfigError(f"--save-max {max_files} must be at least 1", "Use e.g. --save-max 1000")
        self.folder = Path(folder).expanduser()
        self.target = self.folder / UNLABELLED
        self.threshold, self.margin, self.rate, self.max_files, self.queue_size = threshold, margin, rate, max_files, queue_size
        self.counts = {"uncertain": 0, "rate_limited": 0, "saved": 0, "removed_oldest": 0, "orphan_sidecars_removed": 0}
        self._kept: deque[str] = deque()  # stems of the frames this tool wrote that are still there, oldest first
        self._next_at = 0.0
        self.clock = clock  # for the rate limit
        self._model: dict[str, Any] = {}
        self._labels: list[str] = []
        self._cv2: Any = None
        self._worker: BoundedWorker[dict[str, Any]] | None = None

    def open(self, backend: Backend) -> None:
        self._cv2 = require("cv2", "pi")
        model = backend.path
        check_outputs({"--save-uncertain": self.target}, {"--model": model, "--model's meta.json": model.parent / "meta.json"})
        try:
            self.target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create '{self.target}' for --save-uncertain: {exc.strerror}",
                              "Pass a folder you can write to") from exc
        sweep_stale_temps(self.target)
        self._kept.extend(self._scan())
        self._trim()
        meta = backend.meta
        self._labels = list(meta.labels)
        self._model = {"file": str(backend.path), "architecture": meta.architecture, "input_size": list(meta.input_size),
                       "labels": len(meta.labels)}
        self._worker = BoundedWorker("save-uncertain", self._save, maxsize=self.queue_size)
        log.info("keeping uncertain frames in %s (label one by moving it into %s/<class>/)", self.target, self.folder)

    def offer(self, result: FrameResult) -> None:
        """On the inference thread: the frame's own scores decide; the copy and the writing happen on the worker."""
        scores = np.asarray(result.raw, dtype=np.float32).reshape(-1)
        if scores.size == 0:
            return
        order = np.argsort(scores)[::-1][: max(2, min(5, scores.size))]
        top1 = float(scores[order[0]])
        top2 = float(scores[order[1]]) if scores.size > 1 else 0.0
        reasons = []
        if top1 < self.threshold:
            reasons.append(f"top-1 score {top1:.3f} below --threshold {self.threshold:g}")
        if self.margin > 0 and top1 - top2 < self.margin:
            reasons.append(f"top-1 minus top-2 {top1 - top2:.3f} below --margin {self.margin:g}")
        if not reasons:
            return
        self.counts["uncertain"] += 1
        now = self.clock()
        if now < self._next_at:
            self.counts["rate_limited"] += 1
            return
        self._next_at = now + 1.0 / self.rate
        top = [{"label": self._labels[i] if i < len(self._labels) else str(i), "id": int(i), "score": round(float(scores[i]), 6)}
               for i in map(int, order)]
        if self._worker is not None:
            self._worker.submit({"frame": result.frame, "time": datetime.now(timezone.utc), "index": result.index, "seq": result.seq,
                                 "top_k": top, "label": result.decision.label, "reasons": reasons})

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()

    def report(self) -> dict[str, Any]:
        worker = self._worker.counts() if self._worker is not None else {}
        return {"folder": str(self.target), "threshold": self.threshold, "margin": self.margin, "rate": self.rate,
                "max_files": self.max_files, "kept_now": len(self._kept), **self.counts,
                "dropped_queue_full": worker.get("dropped", 0), "failed": worker.get("failed", 0), "first_error": worker.get("first_error")}

    # ---------------------------------------------------------------- the worker thread

    def _save(self, item: dict[str, Any]) -> None:
        cv2, frame = self._cv2, item["frame"]
        stamp = item["time"].strftime("%Y%m%dT%H%M%S") + f"{item['time'].microsecond // 1000:03d}Z"
        stem = f"{stamp}-{item['index']:06d}"
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode frame {item['index']} as JPEG")
        sidecar = {"tool": "edgecls", "kind": SIDECAR_KIND, "image": f"{stem}.jpg",
                   "time": item["time"].isoformat(timespec="milliseconds"), "frame": item["index"], "seq": item["seq"],
                   "size": [int(frame.shape[1]), int(frame.shape[0])], "label": item["label"], "top_k": item["top_k"],
                   "why": item["reasons"], "threshold": self.threshold, "margin": self.margin, "model": self._model}
        write_json(self.target / f"{stem}.json", sidecar)  # first: an image is only ever on disk with its claim beside it
        with atomic_path(self.target / f"{stem}.jpg") as tmp:
            tmp.write_bytes(jpeg.tobytes())
        self._kept.append(stem)
        self.counts["saved"] += 1
        self._trim()

    # ---------------------------------------------------------------- what is ours on disk

    def _scan(self) -> list[str]:
        """Stems of the frames a previous run wrote that are still unlabelled, oldest first; orphan sidecars removed."""
        stems = []
        for sidecar in sorted(self.target.glob("*.json")):
            if not NAME.match(sidecar.stem) or not _is_ours(sidecar):
                continue
            if (self.target / f"{sidecar.stem}.jpg").is_file():
                stems.append(sidecar.stem)
            else:  # its image was moved into a class folder (labelled) or never written
                sidecar.unlink(missing_ok=True)
                self.counts["orphan_sidecars_removed"] += 1
        return stems

    def _trim(self) -> None:
        while len(self._kept) > self.max_files:
            stem = self._kept.popleft()
            sidecar = self.target / f"{stem}.json"
            if _is_ours(sidecar):
                (self.target / f"{stem}.jpg").unlink(missing_ok=True)
                sidecar.unlink(missing_ok=True)
                self.counts["removed_oldest"] += 1


def _is_ours(sidecar: Path) -> bool:
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("tool") == "edgecls" and data.get("kind") == SIDECAR_KIND \
        and data.get("image") == f"{sidecar.stem}.jpg"


__all__ = ["UNLABELLED", "UncertainKeeper"]
