"""Where the camera loop's results go besides the screen: MQTT / Home Assistant, frames kept for retraining.

Each integration is a `ResultSink`. The camera loop (edgecls.camera.loop.run_camera(sinks=...)) calls
`open` once before frames flow, `offer` once per classified frame ON THE INFERENCE THREAD, and `close`
at shutdown; `report()` goes into the run's JSON report under `integrations.<name>`. `offer` must
never block: it decides cheaply and hands the work to its own thread through a bounded queue
(edgecls.integrations.worker.BoundedWorker), counting what it had to drop.

No TensorFlow; paho-mqtt and OpenCV are imported only by the integrations that need them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from edgecls.camera.loop import FrameResult
    from edgecls.runtime.base import Backend


@runtime_checkable
class ResultSink(Protocol):
    """A consumer of the camera loop's per-frame results (see the module docstring)."""

    name: str  # the key of its counters in the report's "integrations"

    def open(self, backend: Backend) -> None:
        """Called once before the first frame, with the loaded model (meta, labels, backend name)."""
        ...

    def offer(self, result: FrameResult) -> None:
        """One classified frame, on the inference thread: must return at once."""
        ...

    def close(self) -> None:
        """Finish (bounded time): flush what can be flushed, stop threads, release connections."""
        ...

    def report(self) -> dict[str, Any]:
        """Counters and settings for the run's report (never credentials)."""
        ...


__all__ = ["ResultSink"]
