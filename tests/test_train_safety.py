"""train/eval safety: --out never inside --data, one trainer per run folder, .keras and checkpoint archives
checked before anything parses them, every train option documented with TrainConfig's default.

Most cases fail before TensorFlow loads, so they are quick.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import assert_clean_error, run_cli


def _tree(root: Path, classes: tuple[str, ...] = ("a", "b"), count: int = 3) -> Path:
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(root / name / f"{i}.png")
    return root


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("where", ["inside", "same", "contains", "default-out-from-inside-data"])
def test_out_inside_data_is_refused_before_any_work(where: str, tmp_path: Path) -> None:
    data = _tree(tmp_path / "data")
    before = _listing(tmp_path)
    out = {"inside": ["--out", data / "a" / "run"], "same": ["--out", data], "contains": ["--out", tmp_path],
           "default-out-from-inside-data": []}[where]
    result = run_cli("train", "--data", data.resolve(), "--model", "plain_cnn", *out, cwd=data)
    assert_clean_error(result, "--out" if out else "models/plain_cnn-", "--data", "outside the command's inputs")
    assert _listing(tmp_path) == before  # nothing written, the dataset untouched


def test_second_trainer_of_a_folder_gets_one_line(tmp_path: Path) -> None:
    """While one process trains into a run folder (holds its lock), `train --out SAME` and `--resume SAME` are refused."""
    from edgecls.locks import folder_lock

    data = _tree(tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    state = {"config": {"data": str(data), "model": "plain_cnn"}, "phase": "head", "epochs_done": 1}
    with folder_lock(run):  # stands for the edgecls process training into `run`
        fresh = run_cli("train", "--data", data, "--model", "plain_cnn", "--out", run)
        assert_clean_error(fresh, f"'{run}' is being trained by another edgecls process", "Wait for it to finish")
        assert list(run.iterdir()) == []
        (run / "state.json").write_text(json.dumps(state))
        resumed = run_cli("train", "--resume", run)
        assert_clean_error(resumed, f"'{run}' is being trained by another edgecls process")
    assert json.loads((run / "state.json").read_text()) == state and sorted(p.name for p in run.iterdir()) == ["state.json"]


def test_new_run_into_an_interrupted_run_is_refused(tmp_path: Path) -> None:
    data = _tree(tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.json").write_text(json.dumps({"config": {"data": str(data)}, "phase": "head", "epochs_done": 2}))
    result = run_cli("train", "--data", data, "--model", "plain_cnn", "--out", run)
    assert_clean_error(result, "holds an interrupted run", f"edgecls train --resume {run}")


@pytest.mark.parametrize("case, fragments", [
    ("data-changed", ["the images in --data", "changed since run", "Restore them to resume this run"]),
    ("no-checkpoint", ["has no checkpoint.npz to resume from", "cannot be resumed"]),
])
def test_resume_refuses_what_it_cannot_continue_faithfully(case: str, fragments: list[str], tmp_path: Path) -> None:
    data = _tree(tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    config = {"data": str(data), "model": "plain_cnn", "img_size": 16, "epochs": 3, "fine_tune_epochs": 0}
    state = {"config": config, "phase": "head", "epochs_done": 0, "fingerprint": "0123456789ab"} if case == "data-changed" else \
        {"config": config, "phase": "head", "epochs_done": 2}  # an older edgecls' run: last.keras, no checkpoint.npz
    (run / "state.json").write_text(json.dumps(state))
    assert_clean_error(run_cli("train", "--resume", run), *fragments)
    assert json.loads((run / "state.json").read_text()) == state


def test_failed_start_leaves_no_run_folder(tmp_path: Path) -> None:
    """An error before training begins (here: an image size the default backbone, Lite0, refuses) removes the folder it
    created. (Also test_train_cli.py's bad --img-size case: one TensorFlow start for both.)"""
    data = _tree(tmp_path / "data")
    run = tmp_path / "runs" / "new"
    result = run_cli("train", "--data", data, "--img-size", "8", "--out", run)
    assert_clean_error(result, "--img-size 8x8", "minimum 32")
    assert not run.exists()


# ----------------------------------------------------------------------------- archives

def _zip(path: Path, members: dict[str, bytes | int]) -> Path:
    """A zip with the given members: bytes as they are, an int as that many spaces (compresses ~1000:1)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as handle:
                if isinstance(content, bytes):
                    handle.write(content)
                else:
                    for _ in range(content >> 20):
                        handle.write(b" " * (1 << 20))
    return path


def _fake_run(folder: Path, model_members: dict[str, bytes | int]) -> Path:
    from edgecls.meta import ModelMeta

    folder.mkdir()
    _zip(folder / "model.keras", model_members)
    ModelMeta(architecture="plain_cnn", input_size=(16, 16), labels=["a", "b"]).save(folder)
    return folder


def test_keras_config_zip_bomb_is_refused_before_keras_parses_it(tmp_path: Path) -> None:
    """A config.json that unpacks to 256 MiB from a few hundred KiB: refused from the zip directory, in one line."""
    run = _fake_run(tmp_path / "run", {"metadata.json": b"{}", "config.json": 256 << 20, "model.weights.h5": b""})
    assert (run / "model.keras").stat().st_size < 2 << 20
    image = tmp_path / "x.png"
    Image.new("RGB", (16, 16)).save(image)
    for args in (["predict", run, image], ["eval", run, "--data", _tree(tmp_path / "data")]):
        assert_clean_error(run_cli(*args), "config.json unpacks to 256.0 MiB", "limit 8.0 MiB")


@pytest.mark.parametrize("members, fragment", [
    ({"config.json": b"{}", "model.weights.h5": 96 << 20}, "unpacks to 96.0 MiB from"),
    ({"config.json": b"{}", "../evil.json": b"{}"}, "'../evil.json', outside the archive"),
    ({"config.json": b"{}", "/etc/evil": b"{}"}, "'/etc/evil', outside the archive"),
    ({"metadata.json": 16 << 20, "config.json": b"{}"}, "metadata.json unpacks to 16.0 MiB"),
], ids=["weights-ratio", "dotdot", "absolute", "metadata"])
def test_hostile_keras_archives_are_refused(members: dict[str, bytes | int], fragment: str, tmp_path: Path) -> None:
    from edgecls.errors import ModelError
    from edgecls.run_folder import load_model

    with pytest.raises(ModelError, match="Re-train or restore the file") as caught:
        load_model(_zip(tmp_path / "model.keras", members))
    assert fragment in str(caught.value)


def test_hostile_checkpoints_are_one_line(tmp_path: Path) -> None:
    from edgecls.errors import ModelError
    from edgecls.training.checkpoint import load_checkpoint

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    lying = tmp_path / "lying.npz"  # an .npy header that claims 2**40 float64s: numpy would allocate 8 TiB first
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (1 << 40,)
    with zipfile.ZipFile(lying, "w") as archive, archive.open("model_00000.npy", "w") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(b"\0" * 8)
    progress = json.dumps({"version": 1, "phase": "head", "epochs_done": 1, "rows": [], "best_score": None,
                           "stop": {"best": None, "wait": 0, "stopped": False}})
    with zipfile.ZipFile(lying, "a") as archive, archive.open("progress.npy", "w") as handle:
        np.lib.format.write_array(handle, np.frombuffer(progress.encode(), np.uint8))
    for path, fragment in ((garbage, "not a readable zip archive"), (lying, "claims (1099511627776,)")):
        with pytest.raises(ModelError, match="cannot be resumed|Re-train or restore") as caught:
            load_checkpoint(path)
        assert fragment in str(caught.value)


# ----------------------------------------------------------------------------- one declaration of the options

def test_every_train_and_eval_option_has_help_and_the_library_default() -> None:
    import inspect

    import typer
    import typer.main

    from edgecls.cli import evaluate, train
    from edgecls.training.augment import AugmentConfig
    from edgecls.training.config import TrainConfig, knobs
    from edgecls.training.evaluate import evaluate as evaluate_function

    app = typer.Typer()
    train.register(app)
    evaluate.register(app)
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    declared = {**knobs(AugmentConfig), **knobs(TrainConfig)}
    train_params = [p for p in commands["train"].params if p.name != "help"]
    assert len(train_params) == 33
    for param in train_params:
        assert param.help and len(param.help) > 10, param.name
        if param.name in declared and param.name not in ("data", "augment"):
            assert param.default == declared[param.name][0], param.name
    signature = inspect.signature(evaluate_function).parameters
    for param in commands["eval"].params:
        assert param.help, param.name
        name = {"backend_device": "device"}.get(param.name, param.name)
        if name in signature and name not in ("model", "data"):
            assert param.default == signature[name].default, param.name
