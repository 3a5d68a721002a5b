"""The runtime side must work where TensorFlow is not installed (a Raspberry Pi with edgecls[pi])."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    class NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "keras", "tf_keras", "torch"):
                raise ImportError(f"{name} is blocked in this test", name=name)
    sys.meta_path.insert(0, NoTensorFlow())
    """
)

RUNTIME_MODULES = [
    "edgecls", "edgecls.errors", "edgecls.meta", "edgecls.preprocess", "edgecls.postprocess",
    "edgecls.metrics", "edgecls.fsutil", "edgecls.locks", "edgecls.openvino_import", "edgecls.zoo", "edgecls.zoo.registry",
    "edgecls.doctor",
    "edgecls.data.folder", "edgecls.data.check", "edgecls.data.fashion_mnist", "edgecls.cli.app",
    "edgecls.runtime", "edgecls.runtime.litert", "edgecls.runtime.onnx", "edgecls.runtime.openvino",
    "edgecls.camera.sources", "edgecls.camera.grabber", "edgecls.camera.stats", "edgecls.camera.overlay",
    "edgecls.camera.loop", "edgecls.camera.session", "edgecls.camera.pipeline", "edgecls.camera.outputs", "edgecls.camera.server",
    "edgecls.predictor",
    "edgecls.quantize.calibration", "edgecls.zoo.keras_weights", "edgecls.cli.quiet", "edgecls.cli.models",
    "edgecls.export.formats", "edgecls.cli.camera", "edgecls.cli.predict", "edgecls.bench.measure",
    "edgecls.bench.runner", "edgecls.cli.bench", "edgecls.devices", "edgecls.deploy", "edgecls.cli.deploy",
    "edgecls.runtime.base", "edgecls.runtime.common", "edgecls.runtime.loader", "edgecls.runtime.classifier",
    "edgecls.data.sampling", "edgecls.data.labelled", "edgecls.data.video", "edgecls.metadata", "edgecls.metadata.golden",
    "edgecls.metadata.tflite", "edgecls.metadata.onnx", "edgecls.verify", "edgecls.cli.verify", "edgecls.cli.serve",
    "edgecls.camera.api", "edgecls.camera.httpd", "edgecls.camera.access", "edgecls.integrations.mqtt",
    "edgecls.integrations.uncertain", "edgecls.export.tflite_inspect", "edgecls.run_folder", "edgecls.deploy.mqtt",
    "edgecls.camera.imx500", "edgecls.deploy.imx500", "edgecls.camera.priority", "edgecls.camera.rates",
    "edgecls.deploy.camera_secret",
    "edgecls.bench.report",
]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_blocker_really_blocks_tensorflow() -> None:
    proc = _run("import tensorflow")
    assert proc.returncode != 0 and "blocked" in proc.stderr


def test_runtime_modules_import_without_tensorflow() -> None:
    proc = _run(
        f"""
        import importlib, sys
        for name in {RUNTIME_MODULES!r}:
            importlib.import_module(name)
        from edgecls.zoo import list_backbones
        assert len(list_backbones()) >= 10
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
        assert not heavy, heavy
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_cli_models_and_help_without_tensorflow() -> None:
    proc = _run(
        """
        import sys
        from edgecls.cli.app import main
        sys.argv = ["edgecls", "models", "--json"]
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc.code
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "efficientnet_lite0" in proc.stdout


def test_version_and_short_help_without_tensorflow() -> None:
    proc = _run(
        """
        import sys
        from edgecls.cli.app import main
        for args in (["--version"], ["camera", "-h"], ["predict", "-h"]):
            try:
                main(args)
            except SystemExit as exc:
                assert not exc.code, (args, exc.code)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
        assert not heavy, heavy
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("edgecls ") and " camera [OPTIONS]" in proc.stdout and " predict [OPTIONS]" in proc.stdout


def test_training_without_tensorflow_names_the_extra(tmp_path) -> None:
    proc = _run(
        f"""
        import sys
        from edgecls.cli.app import main
        sys.argv = ["edgecls", "train", "--data", {str(tmp_path)!r}]
        main()
        """
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "pip install 'edgecls[train]'" in proc.stderr
