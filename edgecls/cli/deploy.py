"""`edgecls deploy`: a self-contained bundle (artifact, wheels, install script, systemd unit) for a device profile."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from edgecls.cli.common import err_console, print_json, say

PROFILES = "pi4, pi5, pi-ai-camera, coral-usb-pi, coral-usb-x86, coral-devboard, intel-cpu"


def deploy_command(
    run: Path = typer.Argument(..., help="Run folder with a validated export (RUN/export/<target>-<precision>/)."),
    device: str = typer.Option(..., "--device", help=f"Device profile: {PROFILES}, or a .toml path."),
    out: Path = typer.Option(..., "--out", help="Bundle folder to write (atomically); never the run or a folder holding it."),
    target: str | None = typer.Option(None, "--target", help="tflite | edgetpu | openvino | imx500 (default: the profile's)."),
    precision: str | None = typer.Option(None, "--precision", help="int8 | fp16 | fp32 | dynamic (default: the profile's)."),
    serve: str = typer.Option("0.0.0.0:8080", "--serve",
                              help="HOST:PORT the service's live view binds (IPv4 address or host name, port 1-65535); "
                                   "every request needs the bundle's token."),
    picamera2: bool | None = typer.Option(None, "--picamera2/--no-picamera2",
                                          help="Install apt's python3-picamera2 (default: when the profile's camera is picamera2)."),
    camera: str | None = typer.Option(
        None, "--camera", help="The service's camera source (default: the profile's): index, /dev/videoN, file or stream URL. "
                               "A password in the URL goes into BUNDLE/camera-password (0600, a systemd credential), never into the unit."),
    camera_password_file: Path | None = typer.Option(None, "--camera-password-file",
                                                     help="File holding the stream URL's password (copied into the bundle's 0600 "
                                                          "camera-password)."),
    offline: bool = typer.Option(False, "--offline", help="Also download the device's dependency wheels, so install.sh needs no network."),
    mqtt: str | None = typer.Option(
        None, "--mqtt", help="The service publishes results to this MQTT broker: mqtt[s]://[USER@]HOST[:PORT]/PREFIX (checked now). "
                             "A password goes into BUNDLE/mqtt-password (0600, a systemd credential), never into the unit."),
    mqtt_password_file: Path | None = typer.Option(None, "--mqtt-password-file",
                                                   help="File holding the MQTT password (copied into the bundle's 0600 mqtt-password)."),
    mqtt_ca: Path | None = typer.Option(None, "--mqtt-ca", help="PEM file of the CA that signed an mqtts:// broker's certificate."),
    mqtt_qos: int | None = typer.Option(None, "--mqtt-qos", help="The service's --mqtt-qos: 0, 1 or 2 [default: the camera's, 0]."),
    mqtt_rate: float | None = typer.Option(None, "--mqtt-rate", help="The service's --mqtt-rate: results per second [default: 1]."),
    mqtt_debounce: int | None = typer.Option(None, "--mqtt-debounce", help="The service's --mqtt-debounce: frames [default: 3]."),
    mqtt_retain: bool | None = typer.Option(None, "--mqtt-retain/--mqtt-no-retain", help="Retain the state message [default: yes]."),
    mqtt_discovery: bool | None = typer.Option(None, "--mqtt-discovery/--no-mqtt-discovery",
                                               help="Home Assistant discovery [default: yes]."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out folder that edgecls made (it carries .edgecls-output)."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON only (with live_view_url, holding the token)."),
) -> None:
    """Bundle a run's artifact with edgecls, runtime requirements, install.sh, a systemd unit and a live-view token."""
    from edgecls.deploy import build_bundle
    from edgecls.deploy.camera_secret import PASSWORD_FILE as CAMERA_PASSWORD_FILE
    from edgecls.deploy.camera_secret import camera_setting
    from edgecls.deploy.mqtt import PASSWORD_FILE, mqtt_setting
    from edgecls.devices import load_profile

    profile = load_profile(device)
    camera_bundle = camera_setting((profile.camera or {}).get("source"), camera, camera_password_file)
    if camera_bundle.password_in_url:
        if camera_bundle.from_profile:
            kept = f"the profile file '{profile.path}' still holds it: take it out" if profile.path else "the profile still holds it"
        else:
            from edgecls.integrations.credentials import scrub_argv

            scrub_argv(camera_bundle.password_in_url)
            kept = "your shell history keeps it"
        err_console.print(Text.assemble(("warning:", "yellow"), f" the camera password was given in the stream URL: it goes into "
                                        f"{CAMERA_PASSWORD_FILE} (mode 0600) and no other file of the bundle, but {kept}; "
                                        "prefer --camera-password-file"), soft_wrap=True)
    mqtt_bundle = mqtt_setting(mqtt, mqtt_password_file, mqtt_ca, qos=mqtt_qos, rate=mqtt_rate, debounce=mqtt_debounce,
                               retain=mqtt_retain, discovery=mqtt_discovery)
    if mqtt_bundle is not None and mqtt_bundle.password_in_url:
        from edgecls.integrations.credentials import scrub_argv

        scrub_argv(mqtt_bundle.password_in_url)
        err_console.print(f"[yellow]warning:[/yellow] the MQTT password was given in the URL: it goes into {PASSWORD_FILE} (mode 0600) "
                          "and no other file of the bundle, but your shell history keeps it; prefer --mqtt-password-file")
    if not as_json:
        err_console.print("[dim]building the edgecls wheel and the bundle...[/dim]")
    manifest = build_bundle(run, profile, out, target=target, precision=precision, serve=serve, picamera2=picamera2,
                            offline=offline, overwrite=force, mqtt=mqtt_bundle, camera=camera_bundle)
    if as_json:
        print_json(manifest)
        return
    device_info = manifest["device"]
    validation = manifest.get("validation", {})
    agreement = validation.get("top1_agreement")
    say(f"bundle for {device_info.get('name')} ({device_info.get('title')}): {manifest['out']}")
    say(f"  model    {manifest['artifact']}  ({manifest['target']} {manifest['precision']} on {manifest['backend_device']}"
        + (f", top-1 agreement {agreement:.4f} at export" if isinstance(agreement, float) else "") + ")")
    if manifest.get("service_model") != manifest["artifact"]:
        say(f"  network  {manifest['service_model']} (install.sh packages it on the Pi: imx500-package; no golden set, no verify)")
    say(f"  wheels   {manifest['wheel']}" + (f" + {len(manifest['dependency_wheels'])} dependency wheels" if manifest["offline"] else ""))
    say(f"  needs    {', '.join(manifest['requirements'])}")
    say(f"  service  {manifest['service']['name']}: edgecls camera --serve {manifest['service']['serve']}")
    if camera_bundle.password is not None:
        say(f"  camera   {camera_bundle.source}; password in {CAMERA_PASSWORD_FILE} (mode 0600)")
    if mqtt_bundle is not None:
        secret = f"; password in {PASSWORD_FILE} (mode 0600)" if mqtt_bundle.password is not None else ""
        say(f"  mqtt     {mqtt_bundle.url}{secret}")
    say(f"  token    {manifest['token_file']} (mode 0600; install.sh installs it root-only). Shown once:")
    say(f"  open     {manifest['live_view_url']}")
    say(f"install on the device: copy the folder, then: sudo ./install.sh   (see {manifest['out']}/README.md)")


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy_command)
