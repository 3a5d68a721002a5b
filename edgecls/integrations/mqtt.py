"""Camera results to an MQTT broker (paho-mqtt): per-frame results, debounced state, availability, HA discovery.

`MqttSink` is a ResultSink (edgecls.integrations). On the inference thread `offer` only updates the
debouncer, applies the rate limit and hands a small dict to the publisher thread (a bounded queue;
what does not fit is dropped and counted). paho's own network thread connects, reconnects with
exponential backoff (reconnect_min doubling up to reconnect_max seconds) and keeps a bounded queue of
its own; nothing here ever waits for the broker on the inference thread, and a broker that is down
at start or restarts later only costs the per-frame results published while it was away (counted
as `dropped_offline`). Every (re)connection announces availability "online", the discovery config and
the current state again (all retained); the last will sets "offline" when the process dies without
saying goodbye (SIGKILL, power loss), `close()` sets it on a clean exit.

Topics and credentials: edgecls.integrations.mqtt_config.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from edgecls.errors import require
from edgecls.integrations.mqtt_config import MqttSettings, discovery_config

if TYPE_CHECKING:
    from edgecls.camera.loop import FrameResult
    from edgecls.runtime.base import Backend

log = logging.getLogger("edgecls.camera.mqtt")

MAX_PENDING_STATES = 32  # state changes kept while the broker is away (the oldest go first)
CLOSE_TIMEOUT_S = 2.0  # seconds close() waits for the "offline" message and for each thread
_AUTH_FIX = "Check the user name and password (EDGECLS_MQTT_PASSWORD or --mqtt-password-file) and the broker's ACL"


class Debouncer:
    """A label becomes the state after `frames` consecutive frames with that label ("uncertain" included)."""

    def __init__(self, frames: int = 3) -> None:
        self.frames = max(1, frames)
        self.state: str | None = None
        self._candidate: str | None = None
        self._count = 0

    def update(self, label: str) -> bool:
        """Count one frame's label; True when it just became the new state."""
        if label == self._candidate:
            self._count += 1
        else:
            self._candidate, self._count = label, 1
        if self._count >= self.frames and label != self.state:
            self.state = label
            return True
        return False

    def reset(self) -> None:
        self._candidate, self._count = None, 0


def _now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def result_message(result: FrameResult) -> dict[str, Any]:
    """The JSON body for one frame: label, score, top-k, latency."""
    decision = result.decision
    return {"label": decision.label, "score": round(float(decision.score), 4), "uncertain": bool(decision.uncertain),
            "top_k": [{"label": c.label, "id": int(c.id), "score": round(float(c.score), 4)} for c in decision.top],
            "latency_ms": {key: round(float(result.timings_ms[key]), 2) for key in ("inference", "end_to_end") if key in result.timings_ms},
            "frame": result.index, "time": _now_utc()}


class MqttSink:
    """Publish the camera's results to MQTT from threads of its own (see the module docstring)."""

    name = "mqtt"

    def __init__(self, settings: MqttSettings, connect_wait: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        """connect_wait: seconds open() waits for the first connection (so discovery and availability go out before the
        first result); the run starts anyway after it, and paho keeps trying. clock: for the rate limit."""
        self.settings, self.connect_wait, self.clock = settings, connect_wait, clock
        self.debouncer = Debouncer(settings.debounce)
        self.counts = {"results_published": 0, "states_published": 0, "state_changes": 0, "states_dropped": 0, "dropped_queue_full": 0,
                       "dropped_offline": 0, "publish_failed": 0, "connects": 0, "disconnects": 0, "connect_failures": 0}
        self.last_error: str | None = None
        self._client: Any = None
        self._mqtt: Any = None
        self._cond = threading.Condition()
        self._results: deque[dict[str, Any]] = deque()
        self._state: dict[str, Any] | None = None  # the current debounced state message (republished on every connection)
        self._new_states: deque[dict[str, Any]] = deque(maxlen=MAX_PENDING_STATES)  # changes not published yet, in order
        self._announce = False  # set on every connection: availability, discovery and state again
        self._announced = False  # the first announcement went out
        self._closing = False
        self._discovery: dict[str, Any] | None = None
        self._next_result_at = 0.0
        self._thread: threading.Thread | None = None
        self._warned: set[str] = set()

    # ---------------------------------------------------------------- the camera loop's side

    def open(self, backend: Backend) -> None:
        self._mqtt = mqtt = require("paho.mqtt.client", "mqtt")
        meta, settings = backend.meta, self.settings
        self._discovery = discovery_config(settings, backend.path.name, meta.architecture)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=settings.client_id, protocol=mqtt.MQTTv311, clean_session=True)
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            client.tls_set(ca_certs=str(settings.ca_file) if settings.ca_file else None)
        client.will_set(settings.availability_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(settings.reconnect_min, settings.reconnect_max)
        client.max_queued_messages_set(settings.queue_size)
        client.connect_timeout = 3.0
        client.on_connect, client.on_disconnect, client.on_connect_fail = self._on_connect, self._on_disconnect, self._on_connect_fail
        self._client = client
        client.connect_async(settings.host, settings.port, settings.keepalive)
        client.loop_start()  # paho's network thread: connects, and reconnects with backoff, without us waiting
        self._thread = threading.Thread(target=self._publish_loop, name="edgecls-mqtt", daemon=True)
        self._thread.start()
        log.info("MQTT: publishing to %s (state %s, results %s at most %g/s)", settings.safe_url, settings.state_topic,
                 settings.result_topic, settings.rate)
        with self._cond:
            if not self._cond.wait_for(lambda: self._announced, self.connect_wait):
                log.warning("MQTT: no connection to %s after %g s; starting anyway (paho keeps trying; results are counted as "
                            "dropped until it connects)", settings.safe_url, self.connect_wait)

    def offer(self, result: FrameResult) -> None:
        """Debounce and rate-limit on the inference thread; the publishing happens on the publisher thread."""
        settings = self.settings
        changed = self.debouncer.update(result.decision.label)
        now = self.clock()
        due = settings.rate > 0 and now >= self._next_result_at
        if not (changed or due):
            return
        message = result_message(result)
        with self._cond:
            if changed:
                previous = self._state["label"] if self._state else None
                self._state = {**message, "previous": previous, "debounce_frames": self.debouncer.frames}
                if len(self._new_states) == MAX_PENDING_STATES:
                    self.counts["states_dropped"] += 1  # the oldest unpublished change; the newest always stays
                self._new_states.append(self._state)
                self.counts["state_changes"] += 1
            if due:
                self._next_result_at = now + 1.0 / settings.rate
                if len(self._results) >= settings.queue_size:
                    self.counts["dropped_queue_full"] += 1
                else:
                    self._results.append(message)
            self._cond.notify()

    def close(self) -> None:
        """Say "offline", disconnect, stop both threads; each step bounded by CLOSE_TIMEOUT_S."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(CLOSE_TIMEOUT_S)
        client = self._client
        if client is None:
            return
        if client.is_connected():
            info = client.publish(self.settings.availability_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(CLOSE_TIMEOUT_S)
            except (RuntimeError, ValueError):
                pass
        client.disconnect()
        stopper = threading.Thread(target=client.loop_stop, name="edgecls-mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(CLOSE_TIMEOUT_S + 1.0)  # loop_stop joins paho's thread without a timeout: never wait on it forever
        with self._cond:
            self.counts["dropped_offline"] += len(self._results)
            self._results.clear()

    def report(self) -> dict[str, Any]:
        connected = bool(self._client is not None and self._client.is_connected())
        return {**self.settings.describe(), **self.counts, "connected_at_end": connected, "state": self.debouncer.state,
                "last_error": self.last_error}

    # ---------------------------------------------------------------- paho's network thread

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:  # noqa: ARG002
        if getattr(reason_code, "is_failure", False):
            self.counts["connect_failures"] += 1
            self._note_error(f"the broker at {self.settings.safe_url} refused the connection: {reason_code}",
                             _AUTH_FIX if "authori" in str(reason_code).lower() or "password" in str(reason_code).lower() else "")
            return
        self.counts["connects"] += 1
        if self.counts["connects"] == 1:
            log.info("MQTT: connected to %s", self.settings.safe_url)
        else:
            log.warning("MQTT: reconnected to %s", self.settings.safe_url)
        with self._cond:
            self._announce = True
            self._cond.notify()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:  # noqa: ARG002
        if self._closing:
            return
        self.counts["disconnects"] += 1
        log.warning("MQTT: lost the broker at %s (%s); reconnecting every %g..%g s, results are dropped (counted) meanwhile",
                    self.settings.safe_url, reason_code, self.settings.reconnect_min, self.settings.reconnect_max)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:  # noqa: ARG002
        self.counts["connect_failures"] += 1
        settings = self.settings
        self._note_error(f"cannot reach the MQTT broker at {settings.safe_url}",
                         f"retrying every {settings.reconnect_min:g}..{settings.reconnect_max:g} s; check the host, port and network")

    def _note_error(self, message: str, fix: str) -> None:
        self.last_error = message
        if message not in self._warned:  # once per distinct problem: a broker that stays down does not flood the log
            self._warned.add(message)
            log.warning("MQTT: %s%s", message, f". {fix}" if fix else "")

    # ---------------------------------------------------------------- the publisher thread

    def _publish_loop(self) -> None:
        closing = False
        while not closing:
            with self._cond:
                self._cond.wait_for(self._work_ready, 1.0)
                closing = self._closing  # one last pass: what was handed over before close() still goes out
                connected = self._client.is_connected()
                announce, self._announce = self._announce and connected, self._announce and not connected
                states: list[dict[str, Any]] = []
                if connected:
                    states = list(self._new_states) or ([self._state] if announce and self._state is not None else [])
                    self._new_states.clear()
                results = list(self._results)
                self._results.clear()
            if not connected:
                self.counts["dropped_offline"] += len(results)
                continue
            if announce:
                self._publish(self.settings.availability_topic, "online", qos=1, retain=True)
                if self.settings.discovery and self._discovery is not None:
                    self._publish(self.settings.discovery_topic, json.dumps(self._discovery), qos=1, retain=True)
            for state in states:
                if self._publish(self.settings.state_topic, json.dumps(state), retain=self.settings.retain):
                    self.counts["states_published"] += 1
            for message in results:
                if self._publish(self.settings.result_topic, json.dumps(message), retain=False):
                    self.counts["results_published"] += 1
            if announce:
                with self._cond:
                    self._announced = True
                    self._cond.notify_all()

    def _work_ready(self) -> bool:
        # A state change waits for the connection (every connection republishes the state anyway): no busy loop offline.
        return self._closing or self._announce or bool(self._results) or (bool(self._new_states) and self._client.is_connected())

    def _publish(self, topic: str, payload: str, qos: int | None = None, retain: bool = False) -> bool:
        info = self._client.publish(topic, payload, qos=self.settings.qos if qos is None else qos, retain=retain)
        if info.rc == self._mqtt.MQTT_ERR_SUCCESS:
            return True
        self.counts["publish_failed"] += 1
        if info.rc == self._mqtt.MQTT_ERR_QUEUE_SIZE:
            self._note_error(f"paho's outgoing queue is full ({self.settings.queue_size} messages)",
                             "the broker is slower than the results")
        return False


__all__ = ["Debouncer", "MqttSink", "result_message"]
