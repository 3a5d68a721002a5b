"""The backbone registry (members register themselves) and the offline story of keras.applications weights."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgecls.errors import ModelError, WeightsUnavailableError
from edgecls.zoo import keras_weights, registry
from tests.conftest import REPO, assert_clean_error, run_cli

LISTING = [
    "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "mobilenet_v3_small_minimalistic", "mobilenet_v3_large_minimalistic", "efficientnet_b0", "resnet50", "densenet121",
    "inception_v3", "vgg16", "plain_cnn",
]
KERAS_APPS = [name for name in LISTING if registry.get_spec(name).family == "keras_applications"]
# Built until Keras asks for its file: every naming rule once (the slow builds' names are literals in Keras' source).
RECORDED = ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v3_small_minimalistic",
            "mobilenet_v3_large_minimalistic", "efficientnet_b0", "resnet50", "vgg16"]
LITERAL = {"densenet121": "densenet", "inception_v3": "inception_v3"}
# Offline for real: urllib (ours and Keras') goes through a proxy on a closed local port, so nothing waits on DNS.
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}


# ---------------------------------------------------------------- registry
def test_registry_module_imports_none_of_its_members() -> None:
    tree = ast.parse((REPO / "edgecls" / "zoo" / "registry.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    assert not {m for m in imported if m and m.startswith("edgecls.zoo")}, imported
    assert "edgecls" not in {m for m in imported if m} and "_load_builtin" not in (REPO / "edgecls/zoo/registry.py").read_text()


def test_importing_the_registry_alone_lists_every_backbone_without_tensorflow() -> None:
    code = textwrap.dedent(
        """
        import sys
        from edgecls.zoo.registry import list_backbones
        print([s.name for s in list_backbones()])
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    names, heavy = proc.stdout.splitlines()
    assert ast.literal_eval(names) == LISTING and heavy == "[]"


def test_a_new_member_registers_itself_with_the_decorator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    contract = dict(family="plain", default_size=16, min_size=8, mean=(0.0,) * 3, std=(1.0,) * 3, reverse_channels=False,
                    params_m=0.0, macs_m=0.0, source="test", offline_weights=None, edge_notes="", edgetpu=registry.EdgeTpuFit(True))

    @registry.register_backbone("tiny_test_net", **contract)
    def tiny(input_size: tuple[int, int], weights: str | None = None, alpha: float | None = None) -> str:
        return "built"

    assert registry.get_spec("tiny_test_net").builder is tiny
    assert [s.name for s in registry.list_backbones()] == [*LISTING, "tiny_test_net"]
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_backbone("tiny_test_net", **contract)(tiny)
    with pytest.raises(ModelError, match="Did you mean 'tiny_test_net'"):
        registry.get_spec("tiny_test_nett")


def test_models_listing_is_unchanged() -> None:
    result = run_cli("models", "--json")
    assert result.returncode == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == LISTING
    assert set(rows[0]) == {
        "name", "family", "default_size", "min_size", "mean", "std", "reverse_channels", "params_m", "macs_m", "source",
        "offline_weights", "edge_notes", "edgetpu", "fixed_size", "supports_alpha", "imagenet_crop", "offline_weights_installed", "imx500",
    }
    fits = {row["name"]: row["edgetpu"] for row in rows}
    hard_swish = registry.get_spec("mobilenet_v3_small").edgetpu
    assert fits["mobilenet_v3_small"] == {"maps_fully": False, "first_cpu_op": "HARD_SWISH", "fix": hard_swish.fix}
    assert fits["mobilenet_v3_small_minimalistic"]["maps_fully"] and fits["efficientnet_lite0"]["first_cpu_op"] is None
    table = run_cli("models")
    assert table.returncode == 0 and "download" in table.stdout and "plain_cnn" in table.stdout
    assert "Edge TPU" in table.stdout and "CPU from HARD_SWISH" in table.stdout


# ---------------------------------------------------------------- keras.applications weights offline
def test_cache_dir_is_where_keras_looks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keras.src.backend.config import keras_home  # fixed when Keras was imported, from this process' environment

    assert keras_weights.cache_dir() == Path(keras_home()).expanduser() / "models"
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert keras_weights.cache_dir() == tmp_path / "kh" / "models"


@pytest.mark.parametrize("name", RECORDED)
def test_the_checked_file_is_the_one_keras_downloads(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keras' own request (recorded at its download function) names the file our offline check looks for."""
    from keras.src.utils import file_utils

    spec = registry.get_spec(name)
    size = (spec.min_size, spec.min_size)
    asked: list[str] = []

    class RecordedError(Exception):
        pass

    def record(fname: str, *args: object, **kwargs: object) -> str:
        asked.append(fname)
        raise RecordedError

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(file_utils, "get_file", record)
    monkeypatch.setattr(keras_weights, "origin_reachable", lambda: True)
    with pytest.raises(RecordedError):
        spec.builder(input_size=size, weights="imagenet")
    assert len(asked) == 1, asked

    monkeypatch.setattr(keras_weights, "origin_reachable", lambda: False)
    assert spec.check_weights is not None
    with pytest.raises(WeightsUnavailableError) as error:
        spec.check_weights(size, "imagenet", None)
    message = str(error.value)
    for fragment in (asked[0], str(tmp_path / "models"), "KERAS_HOME", "efficientnet_lite0/1/2", "--weights none"):
        assert fragment in message, message
    assert "\n" not in message
    spec.check_weights(size, None, None)  # --weights none needs nothing
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / asked[0]).write_bytes(b"cached")
    spec.check_weights(size, "imagenet", None)  # cached: no network needed


@pytest.mark.parametrize(("name", "module"), LITERAL.items())
def test_the_other_checked_files_are_named_in_keras_source(name: str, module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import inspect

    assert set(RECORDED) | set(LITERAL) == set(KERAS_APPS)
    spec = registry.get_spec(name)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras_weights, "origin_reachable", lambda: False)
    assert spec.check_weights is not None
    with pytest.raises(WeightsUnavailableError) as error:
        spec.check_weights((224, 224), "imagenet", None)
    checked = str(error.value).split(f"'{tmp_path / 'models'}/")[1].split("'")[0]
    source = inspect.getsource(importlib.import_module(f"keras.src.applications.{module}"))
    assert f'"{checked}"' in source or f"/{checked}" in source, checked


def test_origin_probe_answers_quickly_offline() -> None:
    code = "from edgecls.zoo.keras_weights import origin_reachable; print(origin_reachable(3.0))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env={**os.environ, **OFFLINE})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_offline_train_with_a_keras_backbone_fails_fast_naming_the_file(fmnist_tree: Path, tmp_path: Path) -> None:
    home = tmp_path / "keras-home"
    result = run_cli(
        "train", "--data", fmnist_tree, "--model", "mobilenet_v2", "--img-size", "32", "--epochs", "1", "--fine-tune-epochs", "0",
        "--out", tmp_path / "run", env={**OFFLINE, "KERAS_HOME": str(home)},
    )
    assert_clean_error(
        result, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5", str(home / "models"), "cannot be reached",
        "efficientnet_lite0/1/2", "--weights none",
    )
    assert "URL fetch failure" not in result.output and "Downloading data" not in result.output
    assert result.returncode == 2 and not (tmp_path / "run").exists()  # nothing left behind (was test_train_safety's own run)


def test_a_broken_cache_offline_is_one_clean_error(tmp_path: Path) -> None:
    """A cached file that fails Keras' hash check (so Keras tries to download it again) and one that is not HDF5."""
    home = tmp_path / "keras-home"
    (home / "models").mkdir(parents=True)
    resnet = home / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    mobilenet = home / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    resnet.write_bytes(b"not the weights")
    mobilenet.write_bytes(b"not the weights")
    code = textwrap.dedent(
        """
        import edgecls.zoo as zoo
        from edgecls.errors import EdgeclsError
        for name in ("resnet50", "mobilenet_v2"):
            try:
                zoo.create(name, 2, 32, weights="imagenet")
            except EdgeclsError as exc:
                print(type(exc).__name__, "|", exc)
        """
    )
    env = {**os.environ, **OFFLINE, "KERAS_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    download, unreadable = [line for line in proc.stdout.splitlines() if " | " in line]
    assert download.startswith("WeightsUnavailableError | could not download the ImageNet weights for resnet50"), download
    assert str(resnet) in download and "--weights none" in download
    assert unreadable.startswith("ModelError | the cached ImageNet weights for mobilenet_v2"), unreadable
    assert str(mobilenet) in unreadable and "Delete that file" in unreadable
