"""`edgecls camera`: classify a live camera, stream, video file or image folder with an exported artifact.

Exit codes: 0 when the run ends by itself (--frames, --seconds, end of the file, q in the window);
130 on Ctrl-C and 143 on SIGTERM, after the report was written and the table printed (the run was
cut short, like any interrupted edgecls command); 2 when the source is lost for good or a recording
cannot be verified; 1 when no frame was classified (every frame failed, or none came).
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.text import Text

from edgecls.cli.common import console, err_console, print_json, say
from edgecls.errors import ConfigError, EdgeclsError

if TYPE_CHECKING:
    from edgecls.integrations import ResultSink

EXIT_CODES = {"interrupted": 130, "terminated": 143}


class _ConsoleHandler(logging.Handler):
    """Library log lines (reconnects, live-view URL, headless fallback) as short stderr lines."""

    def emit(self, record: logging.LogRecord) -> None:
        line = Text(record.getMessage())  # paths and URLs as they are: no markup, no wrapping (a URL stays one line)
        if record.levelno >= logging.WARNING:
            line = Text.assemble(("warning:", "yellow"), " ", line)
        err_console.print(line, soft_wrap=True)


def camera_command(
    model: Path = typer.Option(..., "--model", help="Exported artifact: .tflite, .onnx or OpenVINO .xml (with meta.json beside it), "
                                                    "or the AI Camera's network.rpk with --device imx500 (its meta.json beside it)."),
    source: str = typer.Option("0", "--device", "--source",
                               help="The camera: index (0), /dev/videoN, video file, image folder, rtsp:// or http:// URL, picamera2, or "
                                    "imx500 (the Raspberry Pi AI Camera runs --model network.rpk on its sensor). "
                                    "The inference device is --backend-device."),
    device_password_file: Path | None = typer.Option(
        None, "--device-password-file",
        help="File holding the stream URL's password (mode 0600): put into --device rtsp://USER@HOST/... in memory only, so "
             "no command line shows it (the deployed service gets it from systemd as a credential)."),
    backend_device: str = typer.Option("cpu", "--backend-device", help="Inference device: cpu | coral | gpu | npu | auto."),
    threads: int | None = typer.Option(None, "--threads", help="Runtime threads (the runtime's default when left out)."),
    frames: int | None = typer.Option(None, "--frames", help="Stop after this many frames."),
    seconds: float | None = typer.Option(None, "--seconds", help="Stop after this many seconds."),
    smoothing: float = typer.Option(0.0, "--smoothing", help="EMA factor on probabilities, 0 (off) to 0.9."),
    threshold: float = typer.Option(0.0, "--threshold", help="Top-1 scores below this are shown as 'uncertain'."),
    top_k: int = typer.Option(3, "--top-k", help="Classes kept per frame."),
    headless: bool | None = typer.Option(None, "--headless/--show",
                                         help="No window / a window (default: a window when a display exists)."),
    record: Path | None = typer.Option(None, "--record", help="Write annotated frames to this .mp4 (mp4v) or .avi (MJPG)."),
    record_drop: bool = typer.Option(
        False, "--record-drop",
        help="Record a video file or folder like a live camera: real time at --record-fps, frames skipped rather than "
             "inference slowed (live sources always do this)."),
    record_fps: float | None = typer.Option(
        None, "--record-fps",
        help="Recorded frames a second at most (also the video's rate, so it plays in real time; each is drawn and encoded on the "
             "camera's CPU) [default: 10 for a live camera or with --record-drop, capped at the source's rate; a file's own rate]."),
    serve: str | None = typer.Option(None, "--serve", help="Live view in a browser at HOST:PORT (e.g. 0.0.0.0:8080)."),
    live_fps: float | None = typer.Option(
        None, "--live-fps",
        help="Live-view frames a second at most while someone watches (JPEGs encoded on the camera's CPU) [default: 10]."),
    token_file: Path | None = typer.Option(
        None, "--token-file",
        help="File holding the live view's access token (one line, 16+ URL-safe characters, mode 0600), required on every "
             "route. Without it, --serve on a non-loopback address makes a new token and prints the URL with it once."),
    width: int | None = typer.Option(None, "--width", help="Ask a live camera for this frame width."),
    height: int | None = typer.Option(None, "--height", help="Ask a live camera for this frame height."),
    report: Path | None = typer.Option(None, "--report",
                                       help="Where to write the JSON report [default: camera_report.json beside the model]."),
    mqtt: str | None = typer.Option(
        None, "--mqtt",
        help="Publish results to an MQTT broker: mqtt[s]://[USER@]HOST[:PORT]/PREFIX (Home Assistant discovery included). "
             "Password: --mqtt-password-file or EDGECLS_MQTT_PASSWORD (one in the URL is scrubbed from ps, but prefer those)."),
    mqtt_password_file: Path | None = typer.Option(None, "--mqtt-password-file", help="File holding the MQTT password (mode 0600)."),
    mqtt_ca: Path | None = typer.Option(None, "--mqtt-ca", help="PEM file of the CA that signed an mqtts:// broker's certificate."),
    mqtt_qos: int = typer.Option(0, "--mqtt-qos", help="QoS of results and state messages: 0, 1 or 2."),
    mqtt_retain: bool = typer.Option(True, "--mqtt-retain/--mqtt-no-retain", help="Retain the state message (the debounced label)."),
    mqtt_rate: float = typer.Option(1.0, "--mqtt-rate", help="Per-frame results published per second at most (0: none, state only)."),
    mqtt_debounce: int = typer.Option(3, "--mqtt-debounce", help="Consecutive frames a label needs before it becomes the state."),
    mqtt_discovery: bool = typer.Option(True, "--mqtt-discovery/--no-mqtt-discovery", help="Publish Home Assistant discovery."),
    save_uncertain: Path | None = typer.Option(
        None, "--save-uncertain",
        help="Keep frames the model is unsure about for retraining: DIR/.unlabelled/<time>.jpg + .json (label one by moving "
             "it into DIR/<class>/, then edgecls train --data DIR)."),
    margin: float = typer.Option(0.0, "--margin", help="--save-uncertain also keeps frames whose top-1 minus top-2 score is below this."),
    save_rate: float = typer.Option(1.0, "--save-rate", help="Uncertain frames saved per second at most."),
    save_max: int = typer.Option(1000, "--save-max", help="Uncertain frames kept on disk at most (the oldest this tool wrote go first)."),
    capture: str | None = typer.Option(
        None, "--capture",
        help="auto: let a USB camera or picamera2 (lores) deliver the smallest frames covering the model; full: the camera's "
             "own size [default: auto, full with --record or --save-uncertain; --width/--height always win]."),
    pipeline: bool = typer.Option(True, "--pipeline/--no-pipeline",
                                  help="Read and preprocess the next frame on a second thread while this one is in inference "
                                       "(higher FPS, same results)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON only."),
) -> None:
    """Run an exported model on a camera, stream, video or folder; write a latency report."""
    from edgecls.camera.loop import default_report_path, run_camera
    from edgecls.camera.rates import record_fps_option
    from edgecls.camera.stats import render_summary

    live_rate = _live_fps(live_fps, serve)
    record_rate = record_fps_option(record_fps, record)  # before the camera starts
    with log_to_console():
        source = _stream_source(source, device_password_file)
        sinks: list[ResultSink] = []
        if mqtt is not None:
            sinks.append(_mqtt_sink(mqtt, mqtt_password_file, ca_file=mqtt_ca, qos=mqtt_qos, retain=mqtt_retain, rate=mqtt_rate,
                                    debounce=mqtt_debounce, discovery=mqtt_discovery))
        if save_uncertain is not None:
            from edgecls.integrations.uncertain import UncertainKeeper

            sinks.append(UncertainKeeper(save_uncertain, threshold=threshold, margin=margin, rate=save_rate, max_files=save_max))
        report = report if report is not None else default_report_path(model)
        try:
            summary = run_camera(
                model, source, device=backend_device, threads=threads, frames=frames, seconds=seconds, smoothing=smoothing,
                threshold=threshold, top_k=top_k, headless=headless, record=record, serve=serve, report=report,
                width=width, height=height, pipeline=pipeline, token_file=token_file, sinks=sinks,
                record_drop=record_drop, live_fps=live_rate, record_fps=record_rate,
                capture=capture or ("full" if record is not None or save_uncertain is not None else "auto"),
            )
        except EdgeclsError as exc:
            ran = getattr(exc, "summary", None)  # the loop ran: show its table before the error line
            if ran:
                _render(ran, report, as_json, render_summary)
            raise
    _render(summary, report, as_json, render_summary)
    code = EXIT_CODES.get(summary.get("stop_reason", ""), 0)
    if code:
        raise typer.Exit(code)


@contextlib.contextmanager
def log_to_console() -> Iterator[None]:
    """Library log lines under edgecls.camera (reconnects, live-view URL, MQTT) as short stderr lines while the block runs."""
    handler = _ConsoleHandler(logging.INFO)
    library_log = logging.getLogger("edgecls.camera")
    saved = library_log.level, library_log.propagate
    library_log.addHandler(handler)
    library_log.setLevel(logging.INFO)
    library_log.propagate = False
    try:
        yield
    finally:
        library_log.removeHandler(handler)
        library_log.setLevel(saved[0])
        library_log.propagate = saved[1]


def _stream_source(source: str, password_file: Path | None) -> str:
    """--device with the password from --device-password-file put in (in memory); a password spelled in the URL is
    scrubbed from this process's command line, with a warning."""
    from edgecls.integrations.credentials import scrub_argv, url_password

    if password_file is not None:
        from edgecls.camera.sources import source_with_password

        return source_with_password(source, password_file)
    spelled = url_password(source) if "://" in source else None
    if spelled:
        scrubbed = scrub_argv(spelled)
        logging.getLogger("edgecls.camera.source").warning(
            "the camera password was given in the --device URL: %s; use --device-password-file instead",
            "it was removed from this process's command line, but shell history and service files may keep it" if scrubbed
            else "other users can see it in ps")
    return source


def _live_fps(value: float | None, serve: str | None) -> float:
    """--live-fps checked before the camera starts: only with --serve, within (0, 60]."""
    from edgecls.camera.rates import DEFAULT_LIVE_FPS, check_live_fps

    if value is None:
        return DEFAULT_LIVE_FPS
    if not serve:
        raise ConfigError(f"--live-fps {value:g} applies to the live view only", "Add --serve HOST:PORT, or leave --live-fps out")
    return check_live_fps(value)


def _mqtt_sink(url: str, password_file: Path | None, **options: Any) -> ResultSink:
    """The MQTT sink for --mqtt; a password spelled in the URL is scrubbed from this process's command line first."""
    from edgecls.integrations.credentials import scrub_argv
    from edgecls.integrations.mqtt import MqttSink
    from edgecls.integrations.mqtt_config import PASSWORD_ENV, parse_mqtt_url

    settings, password_in_url = parse_mqtt_url(url, password_file=password_file, **options)
    if password_in_url:
        scrubbed = scrub_argv(password_in_url)
        logging.getLogger("edgecls.camera.mqtt").warning(
            "the MQTT password was given in the URL: %s; use %s or --mqtt-password-file instead",
            "it was removed from this process's command line, but shell history and service files may keep it" if scrubbed
            else "other users can see it in ps", PASSWORD_ENV)
    return MqttSink(settings)


def _render(summary: dict, report: Path, as_json: bool, render_summary: object) -> None:
    if as_json:
        print_json(summary)
        return
    render_summary(summary, console)  # type: ignore[operator]
    say(f"report: {report}")


def register(app: typer.Typer) -> None:
    app.command("camera")(camera_command)
