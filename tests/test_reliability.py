"""Hostile inputs and faults: edgecls never crashes, hangs, corrupts or runs foreign code.

Each test here is one or more rows of docs/reliability.md. User-facing cases go through the real CLI
(`run_cli`, a subprocess); mechanisms that cannot be provoked from outside (a converter that swallows
Ctrl-C, a disk that fills up on a machine where we cannot mount one) are driven in-process.
"""
from __future__ import annotations

import base64
import dataclasses
import errno
import hashlib
import json
import marshal
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecls.errors import ConfigError, ImageError, ModelError
from edgecls.fsutil import atomic_dir, atomic_path
from edgecls.meta import ModelMeta
from edgecls.preprocess import load_image
from tests.conftest import assert_clean_error, run_cli

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ----------------------------------------------------------------------------- helpers

def png_header_only(path: Path, width: int, height: int) -> Path:
    """A few hundred bytes that claim a huge RGB PNG: a decompression bomb if anything allocated it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))
    return path


def noise(seed: int, size: tuple[int, int] = (24, 24)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def truncated(path: Path, image: Image.Image, fmt: str) -> Path:
    image.save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def copy_run(run: Path, dest: Path) -> Path:
    """A copy of a run folder without its exports (tests corrupt the copy, never the shared run)."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("export"))
    return dest


def edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def hidden_leftovers(folder: Path) -> list[str]:
    """Temp files/folders of fsutil's atomic writers (`.name.*.tmp`) or anything else hidden."""
    from edgecls.fsutil import OUTPUT_MARKER

    return sorted(p.name for p in folder.rglob(".*") if p.name != OUTPUT_MARKER) if folder.exists() else []


def artifact_copy(artifact: Path, dest: Path) -> Path:
    """An exported artifact folder (model, .bin, meta.json) copied to dest; returns the model file."""
    shutil.copytree(artifact.parent, dest)
    return dest / artifact.name


def cli_cases(*rows: tuple[list[str], list[str]]) -> list:
    """Parameters named by their command line, placeholders in capitals: 'export RUN --fp16 --target edgetpu'."""
    return [pytest.param(args, fragments, id=" ".join(a.strip("{}").upper() if "{" in a else a for a in args)) for args, fragments in rows]


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def artifacts(plain_fp32_exports: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32 tflite, onnx and openvino exports of the session's plain run through the real CLI (made once per test run), copied."""
    out = shutil.copytree(plain_fp32_exports, tmp_path_factory.mktemp("reliability_exports") / "export")
    return {"tflite": out / "tflite-fp32" / "model.tflite", "onnx": out / "onnx-fp32" / "model.onnx",
            "openvino": out / "openvino-fp32" / "model.xml"}


@pytest.fixture(scope="module")
def tiny_disks(tmp_path_factory: pytest.TempPathFactory):
    """A 64 KiB tmpfs (a full disk after a few writes) and a read-only tmpfs; needs root and mount rights."""
    if not IS_ROOT or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root; test_full_disk_mid_write_is_a_clean_error_in_process covers the mechanism")
    root = tmp_path_factory.mktemp("disks")
    full, read_only = root / "full", root / "ro"
    full.mkdir()
    read_only.mkdir()
    mounted = []
    for folder, options in ((full, "size=64k"), (read_only, "ro,size=64k")):
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
        if proc.returncode:
            for done in mounted:
                subprocess.run(["umount", str(done)], capture_output=True)
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); the in-process ENOSPC test covers the mechanism")
        mounted.append(folder)
    try:
        yield {"full": full, "ro": read_only}
    finally:
        for folder in mounted:
            subprocess.run(["umount", str(folder)], capture_output=True)


# ============================================================================= images

def test_odd_but_valid_images_are_classified(artifacts: dict[str, Path], tmp_path: Path) -> None:
    """1x1, PNG named .jpg, 16-bit, CMYK, animated GIF (first frame), EXIF rotation, odd file names."""
    upright = np.zeros((20, 40, 3), np.uint8)
    upright[:, :10] = 255
    upright[:5, :, 1] = 200
    rotate = Image.Exif()
    rotate[0x0112] = 6  # "rotate 90 degrees clockwise to display": the stored pixels are turned
    red, green = Image.new("RGB", (24, 24), (230, 20, 20)), Image.new("RGB", (24, 24), (20, 230, 20))
    files = {
        "upright.png": lambda p: Image.fromarray(upright).save(p),
        "rotated.png": lambda p: Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(p, exif=rotate),
        "red.png": lambda p: red.save(p),
        "animated.gif": lambda p: red.save(p, save_all=True, append_images=[green], duration=100, loop=0),
        "one_pixel.png": lambda p: Image.new("RGB", (1, 1), (9, 99, 199)).save(p),
        "png_inside.jpg": lambda p: noise(1).save(p, format="PNG"),
        "sixteen_bit.png": lambda p: Image.fromarray(np.arange(24 * 24, dtype=np.uint16).reshape(24, 24) * 97).save(p),
        "cmyk.jpg": lambda p: noise(2).convert("CMYK").save(p),
        "odd [bold] name :smile:.png": lambda p: noise(3).save(p),
    }
    paths = []
    for name, write in files.items():
        write(tmp_path / name)
        paths.append(tmp_path / name)
    raw_name = os.fsdecode(b"caf\xe9 photo \xff with spaces.png")  # not UTF-8: surrogate-escaped by Python
    noise(4).save(tmp_path / raw_name, format="PNG")
    paths.append(tmp_path / raw_name)
    assert Image.open(tmp_path / "sixteen_bit.png").mode.startswith("I") and Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"

    result = run_cli("predict", artifacts["tflite"], *paths, "--top-k", "10", "--json")
    assert result.returncode == 0, result.output
    scores = {Path(r["image"]).name: {c["id"]: c["score"] for c in r["top"]} for r in json.loads(result.stdout)}
    assert len(scores) == len(paths)
    assert scores["rotated.png"] == pytest.approx(scores["upright.png"], abs=1e-6)  # orientation honoured
    assert scores["animated.gif"] == pytest.approx(scores["red.png"], abs=1e-6)  # first frame

    # A model path with "[/" in it (folders "models [" and "v2]") would be a closing markup tag for rich, and a
    # console that refuses undecodable bytes (errors=strict) must still print the non-UTF-8 name.
    model = artifact_copy(artifacts["tflite"], tmp_path / "models [" / "v2] tflite")
    table = run_cli("predict", model, *paths[-2:], "--top-k", "1", env={"PYTHONIOENCODING": "utf-8:strict"})
    assert table.returncode == 0 and "Traceback" not in table.output, table.output
    assert "odd [bold] name :smile:.png" in table.stdout and "models [/v2] tflite" in table.stdout  # as is: no markup, no emoji
    assert "caf\\udce9 photo" in table.stdout


def bad_image(case: str, folder: Path) -> Path:
    if case == "zero-bytes":
        (folder / "zero.png").write_bytes(b"")
        return folder / "zero.png"
    if case in ("truncated-jpeg", "truncated-png"):
        fmt = "JPEG" if case == "truncated-jpeg" else "PNG"
        return truncated(folder / f"cut.{fmt.lower()}", noise(5, (64, 64)), fmt)
    if case == "text-named-jpg":
        (folder / "text.jpg").write_text("this is a note, not a photo")
        return folder / "text.jpg"
    if case == "bomb":
        return png_header_only(folder / "bomb.png", 100_000, 100_000)
    if case == "over-64M-pixels":
        return png_header_only(folder / "big.png", 9_000, 9_000)
    if case == "fifo":  # opening it would block until a writer comes: it must be refused, not hang
        os.mkfifo(folder / "pipe.png")
        return folder / "pipe.png"
    (folder / "folder.png").mkdir()
    return folder / "folder.png"


BAD_IMAGES = {
    "zero-bytes": "empty (0 bytes)",
    "truncated-jpeg": "not a readable image",
    "truncated-png": "not a readable image",
    "text-named-jpg": "not a readable image",
    "bomb": "decompression bomb",
    "over-64M-pixels": "pixel limit",
    "fifo": "not a regular file",
    "folder": "is a folder",
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_unusable_image_is_one_clean_line(case: str, artifacts: dict[str, Path], tmp_path: Path) -> None:
    bad = bad_image(case, tmp_path)
    started = time.monotonic()
    result = run_cli("predict", artifacts["tflite"], bad, timeout=60)
    assert_clean_error(result, str(bad), BAD_IMAGES[case])
    assert time.monotonic() - started < 30


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal comes from the header: the pixel data is never decoded, so nothing is allocated."""
    from PIL import ImageFile

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("the bomb's pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for width, height, fragment in ((100_000, 100_000, "decompression bomb"), (9_000, 9_000, "pixel limit")):
        with pytest.raises(ImageError, match=fragment):
            load_image(png_header_only(tmp_path / f"bomb{width}.png", width, height))


@pytest.mark.skipif(IS_ROOT, reason="root reads chmod 000 files; test_permission_denied_is_reported_simulated covers it")
def test_unreadable_permissions_is_one_clean_line(artifacts: dict[str, Path], tmp_path: Path) -> None:
    locked = tmp_path / "locked.png"
    noise(7).save(locked)
    locked.chmod(0)
    try:
        assert_clean_error(run_cli("predict", artifacts["tflite"], locked), str(locked), "permission denied")
    finally:
        locked.chmod(0o644)


def test_permission_denied_is_reported_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs everywhere (root included): the decoder raising PermissionError gives an ImageError, and a
    dataset scan skips the file with the reason instead of stopping."""
    from edgecls.data.folder import load_splits

    real_open = Image.open

    def guarded_open(fp, *args, **kwargs):
        if Path(fp).name == "locked.png":
            raise PermissionError(errno.EACCES, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", guarded_open)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(3):
            noise(10 + i).save(tmp_path / name / f"{i}.png")
    noise(20).save(tmp_path / "a" / "locked.png")
    with pytest.raises(ImageError, match="not readable \\(permission denied\\)"):
        load_image(tmp_path / "a" / "locked.png")
    data = load_splits(tmp_path, val_split=0.0, test_split=0.0)
    assert [(p.name, r) for p, r in data.skipped] == [("locked.png", "image 'locked.png' is not readable (permission denied)")]
    assert len(data.train) == 6


# ============================================================================= datasets

def hostile_tree(root: Path) -> Path:
    """train/ and test/ with junk, broken files, loops, odd names and a test image copied into train."""
    classes = ("shirts", "shoes [new]")  # a label that rich markup would print as "shoes "
    for split, count in (("train", 6), ("test", 2)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                noise(100 * c + 10 * (split == "test") + i).save(folder / f"img{i}.png")
    shirts = root / "train" / "shirts"
    shutil.copy(root / "test" / "shirts" / "img0.png", shirts / "copy of a test image.png")  # duplicate across splits
    noise(50).save(shirts / os.fsdecode(b"caf\xe9 \xff photo.png"), format="PNG")  # non-UTF-8 file name
    (shirts / "zero.png").write_bytes(b"")
    truncated(shirts / "cut.png", noise(51, (64, 64)), "PNG")
    (shirts / "text.jpg").write_text("not an image")
    png_header_only(shirts / "bomb.png", 100_000, 100_000)
    os.mkfifo(shirts / "pipe.png")
    os.symlink(shirts / "gone.png", shirts / "broken.png")
    os.symlink(root / "train", shirts / "loop")  # a link up the tree
    os.symlink(shirts, shirts / "self")  # a link to itself
    for junk in (".DS_Store", "._img0.png", "Thumbs.db", "desktop.ini", "notes.txt"):
        (shirts / junk).write_bytes(b"\x00junk")
    (root / "train" / ".hidden").mkdir()
    noise(52).save(root / "train" / ".hidden" / "h.png")
    return root


UNREADABLE = {"zero.png", "cut.png", "text.jpg", "bomb.png", "pipe.png", "broken.png"}


@pytest.mark.slow
def test_hostile_dataset_checks_trains_and_evaluates(tmp_path: Path) -> None:
    tree = hostile_tree(tmp_path / "tree")
    check = run_cli("data", "check", tree, "--json", timeout=120)
    assert check.returncode == 0, check.output
    report = json.loads(check.stdout)
    assert report["classes"] == ["shirts", "shoes [new]"]  # junk, hidden folders and loops are not classes
    assert {Path(u["path"]).name for u in report["unreadable"]} == UNREADABLE
    assert report["totals"] == {"train": 12, "val": 2, "test": 4}  # the odd name counts; junk and links do not
    [group] = report["duplicates"]
    assert group["cross_split"] and any("more than one split" in w for w in report["warnings"])
    screen = run_cli("data", "check", tree)
    assert screen.returncode == 0 and "Traceback" not in screen.output, screen.output
    assert "shoes [new]" in screen.stdout

    run = tmp_path / "runs [" / "x]"  # printed paths hold "[/x]", a closing markup tag for rich
    trained = run_cli("train", "--data", tree, "--model", "plain_cnn", "--img-size", "16", "--epochs", "1",
                      "--fine-tune-epochs", "0", "--out", run, timeout=300)
    assert trained.returncode == 0, trained.output
    assert f"skipped {len(UNREADABLE)} unreadable" in trained.stderr
    assert "1 image(s) appear in more than one split" in trained.stderr and "edgecls data check" in trained.stderr
    example = re.search(r"\(e\.g\. (.+) \((\w+)\) and (.+) \((\w+)\)\)", " ".join(trained.stderr.split()))
    assert example and example[2] != example[4], trained.stderr  # the example spans two splits
    assert json.loads((run / "meta.json").read_text())["labels"] == ["shirts", "shoes [new]"]
    evaluated = run_cli("eval", run)
    assert evaluated.returncode == 0 and "Traceback" not in evaluated.output, evaluated.output
    assert "shoes [new]" in evaluated.stdout and f"{run}/eval_confusion_matrix.png" in evaluated.stdout


@pytest.mark.parametrize("case", ["differ", "one-class", "empty-class", "not-utf8-class", "loose-images"])
def test_unusable_dataset_is_one_clean_line(case: str, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    layout = {
        "differ": {"train/a": 3, "train/b": 3, "val/a": 1, "test/a": 1, "test/b": 1, "test/c": 1},
        "one-class": {"only": 4},
        "empty-class": {"a": 3, "b": 3, "c": 0},
        "not-utf8-class": {"a": 3, os.fsdecode(b"caf\xe9"): 3},
        "loose-images": {".": 3},
    }[case]
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            noise(i).save(root / folder / f"{i}.png")
    fragments = {
        "differ": ["class folders differ", "val/ lacks 'b'", "test/ has extra 'c'", "Give train/, val/ and test/ the same class folders"],
        "one-class": ["at least 2 classes", "'only'"],
        "empty-class": ["has no usable images", "c'"],
        "not-utf8-class": ["caf\\xe9", "not valid UTF-8", "Rename the folder"],
        "loose-images": ["holds images but no class folders"],
    }[case]
    assert_clean_error(run_cli("data", "check", root), *fragments)


def test_split_keys_hash_file_name_bytes(tmp_path: Path) -> None:
    """Seeded splits rank files by a hash of their name: a non-UTF-8 name hashes its bytes instead of
    crashing, and a UTF-8 name hashes exactly as before, so existing datasets keep their splits."""
    from edgecls.data.folder import _rank_key

    utf8 = tmp_path / "a" / "ü 0.png"
    assert _rank_key(tmp_path, utf8, 3) == hashlib.sha256("3\0a/ü 0.png".encode()).digest()
    raw = tmp_path / "a" / os.fsdecode(b"\xff.png")
    assert _rank_key(tmp_path, raw, 3) == hashlib.sha256(b"3\0a/\xff.png").digest()


# ============================================================================= models and artifacts

@pytest.mark.parametrize("kind", ["tflite", "onnx", "openvino"])
def test_truncated_artifact_is_one_clean_line(kind: str, artifacts: dict[str, Path], tmp_path: Path) -> None:
    model = artifact_copy(artifacts[kind], tmp_path / kind)
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    image = tmp_path / "x.png"
    noise(1).save(image)
    assert_clean_error(run_cli("predict", model, image), str(model))


def test_truncated_keras_model_is_one_clean_line(plain_run: Path, tmp_path: Path) -> None:
    run = copy_run(plain_run, tmp_path / "run")
    (run / "model.keras").write_bytes((run / "model.keras").read_bytes()[:5000])
    image = tmp_path / "x.png"
    noise(1).save(image)
    assert_clean_error(run_cli("predict", run, image), "model.keras", "truncated or corrupt", "Re-train or restore")


def test_keras_model_with_python_code_is_refused_and_never_runs(plain_run: Path, tmp_path: Path) -> None:
    """A model.keras whose config carries marshalled Python (a Lambda) must not run it on load."""
    run = copy_run(plain_run, tmp_path / "run")
    marker = tmp_path / "pwned"
    function = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).write_text('ran'), x)[1]")
    code = base64.b64encode(marshal.dumps(function.__code__)).decode("ascii")
    evil = {"class_name": "__lambda__", "config": {"value": [code, None, None]}}

    def poison(node: object) -> int:
        if isinstance(node, dict):
            hit = 0
            if node.get("class_name") == "Dense":
                node["config"]["activation"], hit = evil, 1
            return hit + sum(poison(v) for v in node.values())
        return sum(poison(v) for v in node) if isinstance(node, list) else 0

    source = zipfile.ZipFile(plain_run / "model.keras")
    config = json.loads(source.read("config.json"))
    assert poison(config) >= 1
    with zipfile.ZipFile(run / "model.keras", "w") as target:
        for item in source.infolist():
            target.writestr(item, json.dumps(config) if item.filename == "config.json" else source.read(item.filename))
    image = tmp_path / "x.png"
    noise(1).save(image)
    assert_clean_error(run_cli("predict", run, image), "model.keras", "holds serialized Python code", "never runs")
    assert not marker.exists()


ARTIFACT_META = {
    "missing": ["no meta.json beside", "no edgecls metadata embedded in it"],
    "labels": ["outputs 10 classes", "lists 3 labels", "Export the artifact again"],
    "input": ["takes 32x32 input", "input_size 48x48"],
    "newer": ["meta_version 99", "newer than this edgecls understands", "Upgrade edgecls"],
    "not-a-list": ["malformed", "labels must be a list"],
    "folder": ["no meta.json beside", "no edgecls metadata embedded in it"],
}


def _strip_onnx_metadata(model: Path) -> None:
    import onnx

    proto = onnx.load(str(model))
    del proto.metadata_props[:]
    onnx.save(proto, str(model))


def test_artifact_without_meta_json_reads_its_embedded_copy(artifacts: dict[str, Path], tmp_path: Path) -> None:
    model = artifact_copy(artifacts["onnx"], tmp_path / "a")
    (model.parent / "meta.json").unlink()
    image = tmp_path / "x.png"
    noise(1).save(image)
    result = run_cli("predict", model, image)
    assert result.returncode == 0 and "Traceback" not in result.output, result.output


@pytest.mark.parametrize("case", list(ARTIFACT_META))
def test_artifact_meta_missing_or_inconsistent(case: str, artifacts: dict[str, Path], tmp_path: Path) -> None:
    model = artifact_copy(artifacts["onnx"], tmp_path / "a")
    meta = model.parent / "meta.json"
    if case in ("missing", "folder"):
        meta.unlink()
        if case == "folder":
            meta.mkdir()
        _strip_onnx_metadata(model)  # with its embedded copy, a lone artifact is enough (test_lone_artifact.py)
    elif case == "labels":
        edit_json(meta, labels=["a", "b", "c"])
    elif case == "input":
        edit_json(meta, input_size=[48, 48])
    elif case == "newer":
        edit_json(meta, meta_version=99)
    elif case == "not-a-list":
        edit_json(meta, labels="abcdefghij")  # ten characters: must not become ten labels
    image = tmp_path / "x.png"
    noise(1).save(image)
    assert_clean_error(run_cli("predict", model, image), *ARTIFACT_META[case])


RUN_FOLDER = {  # "<what is wrong>-<command>": fragments of the error line
    "newer-predict": ["meta_version 99", "Upgrade edgecls"],
    "newer-export": ["meta_version 99", "Upgrade edgecls"],
    "labels-predict": ["model has 10 outputs but meta.json lists 4 labels", "Re-create meta.json"],
    "splits-eval": ["splits.json", "not an edgecls splits file"],
    "state-resume": ["state.json", "cannot read", "cannot be resumed"],
    "state_shape-resume": ["state.json", "not an edgecls training state"],
}


@pytest.mark.parametrize("key", list(RUN_FOLDER))
def test_run_folder_meta_and_records_inconsistent(key: str, plain_run: Path, tmp_path: Path) -> None:
    case, command = key.split("-")
    run = copy_run(plain_run, tmp_path / "run")
    if case == "newer":
        edit_json(run / "meta.json", meta_version=99)
    elif case == "labels":
        edit_json(run / "meta.json", labels=["a", "b", "c", "d"])
    elif case == "splits":
        (run / "splits.json").write_text('{"train": [["a.png", 0]]')
    elif case == "state":
        (run / "state.json").write_text('{"phase": "head", "epochs_done": ')
    elif case == "state_shape":
        (run / "state.json").write_text('[1, 2, 3]')
    image = tmp_path / "x.png"
    noise(1).save(image)
    args = {"predict": ["predict", run, image], "export": ["export", run, "--out", tmp_path / "e"], "eval": ["eval", run],
            "resume": ["train", "--resume", run]}[command]
    assert_clean_error(run_cli(*args, cwd=tmp_path), *RUN_FOLDER[key])
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize(
    "args, fragments",
    cli_cases(
        (["predict", "{tflite}", "{folder}"], ["is a folder, not an image"]),
        (["predict", "{folder}", "{image}"], ["holds no model.keras and meta.json"]),
        (["export", "{run}", "--int8", "--calib", "{image}"], ["--calib", "is not a folder"]),
        (["export", "{run}", "--out", "{image}"], ["--out", "is a file"]),
        (["eval", "{run}", "--data", "{image}"], ["--data", "is not a folder"]),
        (["train", "--data", "{image}", "--model", "plain_cnn"], ["is a file, not a folder"]),
        (["data", "check", "{image}"], ["is a file, not a folder"]),
    ),
)
def test_folder_where_a_file_is_expected_and_back(args: list[str], fragments: list[str], artifacts: dict[str, Path],
                                                  plain_run: Path, tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    noise(1).save(image)
    (tmp_path / "folder").mkdir()
    paths = {"tflite": artifacts["tflite"], "folder": tmp_path / "folder", "image": image, "run": plain_run}
    filled = [a.format(**paths) for a in args]
    assert_clean_error(run_cli(*filled, cwd=tmp_path), *fragments)
    assert not (plain_run / "export").exists() or not hidden_leftovers(plain_run / "export")


def test_meta_labels_must_be_a_list() -> None:
    with pytest.raises(ModelError, match="labels must be a list"):
        ModelMeta.from_dict({"architecture": "x", "input_size": [8, 8], "labels": "abc"})


# ============================================================================= arguments

@pytest.mark.parametrize(
    "args, fragments",
    cli_cases(
        (["train", "--data", "{tree}", "--img-size", "0"], ["--img-size 0", "must be positive"]),
        (["train", "--data", "{tree}", "--img-size", "-32"], ["--img-size -32"]),
        (["train", "--data", "{tree}", "--batch", "0"], ["--batch 0"]),
        (["train", "--data", "{tree}", "--epochs", "-1"], ["--epochs -1"]),
        (["train", "--data", "{tree}", "--fine-tune-epochs", "-1"], ["--fine-tune-epochs -1", "0 or more"]),
        (["train", "--data", "{tree}", "--lr", "0"], ["--lr 0"]),
        (["train", "--data", "{tree}", "--val-split", "-0.1"], ["--val-split -0.1"]),
        (["eval", "{run}", "--batch", "0"], ["--batch 0"]),
        (["predict", "{run}", "{image}", "--top-k", "0"], ["--top-k 0"]),
        (["predict", "{run}", "{image}", "--threads", "0"], ["--threads 0", "at least 1"]),
        (["export", "{run}", "--holdout-size", "-5"], ["--holdout-size -5"]),
        (["export", "{run}", "--threads", "0"], ["--threads 0", "at least 1"]),
        (["export", "{run}", "--max-drop", "-0.5"], ["--max-drop -0.5"]),
        (["export", "no_such_model"], ["'no_such_model'", "neither an existing run folder nor a model name"]),
        (["export", "{run}", "--fp16", "--target", "edgetpu"], ["edgetpu cannot export precision fp16", "edgetpu takes int8"]),
        (["export", "{run}", "--precision", "fp32", "--target", "edgetpu"], ["edgetpu cannot export precision fp32"]),
        (["export", "{run}", "--precision", "dynamic", "--target", "openvino"], ["openvino cannot export precision dynamic"]),
        (["export", "{run}", "--precision", "int4"], ["unknown precision 'int4'"]),
    ),
)
def test_bad_argument_values_give_one_clean_line(args: list[str], fragments: list[str], plain_run: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for name in ("a", "b"):
        (tree / name).mkdir(parents=True)
        for i in range(3):
            noise(i).save(tree / name / f"{i}.png")
    image = tree / "a" / "0.png"
    filled = [a.format(tree=tree, run=plain_run, image=image) for a in args]
    out = tmp_path / "out"
    result = run_cli(*filled, *(["--out", out] if filled[0] in ("train", "export") else []), cwd=tmp_path)
    assert_clean_error(result, *fragments)
    assert not out.exists()


def test_debug_flag_shows_the_traceback(artifacts: dict[str, Path], tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    noise(1).save(image)
    plain = run_cli("predict", artifacts["tflite"], image, "--top-k", "0")
    assert_clean_error(plain, "--top-k 0")
    debug = run_cli("predict", artifacts["tflite"], image, "--top-k", "0", "--debug")
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr and "ConfigError: --top-k 0 must be at least 1" in debug.stderr


# ----------------------------------------------------------------------------- full disk, read-only output

def test_full_disk_mid_write_is_a_clean_error_in_process(tmp_path: Path) -> None:
    """What a full disk looks like to the atomic writers every output goes through: a ConfigError naming
    the file, and no temp file or half-written target left behind."""
    def full_disk() -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(ConfigError, match=r"cannot write '.*model\.keras': No space left on device\. Free some disk space"):
        with atomic_path(tmp_path / "model.keras") as tmp:
            tmp.write_bytes(b"half a model")
            full_disk()
    with pytest.raises(ConfigError, match=r"cannot write '.*tflite-int8': No space left on device"):
        with atomic_dir(tmp_path / "tflite-int8") as tmp:
            (tmp / "model.tflite").write_bytes(b"half")
            full_disk()
    with pytest.raises(ConfigError, match="Read-only file system"):
        with atomic_path(tmp_path / "meta.json"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    with pytest.raises(FileNotFoundError):  # other errors (e.g. a missing input) keep their own type
        with atomic_path(tmp_path / "x.json"):
            raise FileNotFoundError(errno.ENOENT, "no such input", "input.png")
    assert list(tmp_path.iterdir()) == []


def test_atomic_writes_honour_the_umask(tmp_path: Path) -> None:
    """Files and folders published by rename get the mode a plain open()/mkdir() gives, not mkstemp's 0600."""
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "meta.json") as tmp:
            tmp.write_text("{}")
        with atomic_dir(tmp_path / "tflite-int8") as tmp:
            (tmp / "model.tflite").write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "meta.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "tflite-int8").stat().st_mode) == 0o755


def test_cli_outputs_are_readable_by_others(artifacts: dict[str, Path]) -> None:
    """A run copied to a Pi and read by a service user: published files follow the umask."""
    mask = current_umask()
    folder = artifacts["tflite"].parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path


@pytest.mark.slow
def test_full_disk_through_the_cli(tiny_disks: dict[str, Path], plain_run: Path, fmnist_tree: Path, tmp_path: Path) -> None:
    full = tiny_disks["full"]
    trained = run_cli("train", "--data", fmnist_tree, "--model", "plain_cnn", "--img-size", "16", "--epochs", "1",
                      "--fine-tune-epochs", "0", "--out", full / "run", cwd=tmp_path, timeout=300)
    assert_clean_error(trained, "No space left on device", "Free some disk space")
    assert not (full / "run" / "model.keras").exists() and not (full / "run" / "checkpoint.npz").exists()
    assert hidden_leftovers(full) == []

    exported = run_cli("export", plain_run, "--target", "tflite", "--out", full / "exp", cwd=tmp_path)
    assert_clean_error(exported, "tflite-fp32", "No space left on device")
    assert not (full / "exp" / "tflite-fp32").exists() and hidden_leftovers(full) == []

    shutil.rmtree(full / "run")
    shutil.rmtree(full / "exp", ignore_errors=True)
    written = run_cli("data", "fashion-mnist", full / "fm", "--per-class", "8", "--no-download", cwd=tmp_path)
    if "IDX files not found" in written.output:
        pytest.skip("the Debian Fashion-MNIST package is not installed")
    assert_clean_error(written, "No space left on device")
    assert sorted(p.name for p in full.iterdir()) == []


def test_read_only_output_through_the_cli(tiny_disks: dict[str, Path], plain_run: Path, fmnist_tree: Path, tmp_path: Path) -> None:
    read_only = tiny_disks["ro"]
    trained = run_cli("train", "--data", fmnist_tree, "--model", "plain_cnn", "--out", read_only / "run", cwd=tmp_path)
    assert_clean_error(trained, str(read_only / "run"), "Read-only file system")
    exported = run_cli("export", plain_run, "--target", "tflite", "--out", read_only / "exp", cwd=tmp_path)
    assert_clean_error(exported, str(read_only / "exp"), "Choose a writable output path")
    assert list(read_only.iterdir()) == []


# ============================================================================= interruptions

@pytest.mark.slow
def test_ctrl_c_during_export_leaves_no_partial_artifact(plain_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from edgecls.cli.app import main; main()", "export", str(plain_run), "--int8", "--target", "all",
         "--out", str(out), "--max-drop", "none", "--min-agreement", "none"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            if out.is_dir() and any(p.name.endswith(".tmp") for p in out.iterdir()):
                break  # the first artifact is being written into its temp folder
            time.sleep(0.02)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "error: interrupted" in stderr and "Traceback" not in stderr, stderr
    assert hidden_leftovers(out) == []  # no `.tflite-int8.*.tmp` folder left
    published = [p for p in out.iterdir()] if out.exists() else []
    artifacts = [p for p in published if p.name != "calibration"]  # the calibration set is published first, with its manifest
    for folder in published:  # whatever finished before Ctrl-C is complete; nothing else looks valid
        expected = {"manifest.json"} if folder.name == "calibration" else {"meta.json", "export_report.json"}
        assert folder.is_dir() and expected <= {p.name for p in folder.iterdir()}, folder
    assert len(artifacts) < 4  # it really was interrupted


def _converter_turning_ctrl_c_into_an_error(request):
    """What OpenVINO's frontend does: the KeyboardInterrupt comes back as a RuntimeError."""
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt as exc:
        raise RuntimeError("Check 'false' failed: KeyboardInterrupt: <EMPTY MESSAGE>") from exc


def _converter_swallowing_ctrl_c(request):
    """A converter (or a __del__ during it) that drops the KeyboardInterrupt and carries on."""
    from edgecls.export.base import Artifact

    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:
        pass
    path = request.out_dir / "model.tflite"
    path.write_bytes(b"converted anyway")
    return Artifact(path, "tflite", request.precision)


@pytest.mark.parametrize("writer", ["_converter_turning_ctrl_c_into_an_error", "_converter_swallowing_ctrl_c"])
def test_ctrl_c_swallowed_by_a_converter_still_stops_the_export(writer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgecls.export import api, sources
    from edgecls.export.formats import FORMATS
    from edgecls.export.report import ValidationReport
    from edgecls.export.validate import Holdout

    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("this test needs Python's default SIGINT handler")
    meta = ModelMeta("plain_cnn", (8, 8), ["a", "b"])
    model = type("Model", (), {"count_params": lambda self: 10})()
    monkeypatch.setattr(sources, "load_source", lambda name: sources.Source(model, meta, None, "fake"))
    monkeypatch.setattr(sources, "holdout_set",
                        lambda *a, **k: Holdout(np.zeros((2, 8, 8, 3), np.uint8), None, np.full((2, 2), 0.5), "fake"))
    monkeypatch.setattr(api, "validate", lambda *a, **k: ValidationReport(images=2, source="fake", precision_ran="fp32", max_abs_diff=0.0,
                                                                          mean_abs_diff=0.0, top1_agreement=1.0))
    monkeypatch.setitem(FORMATS, "tflite", dataclasses.replace(FORMATS["tflite"], writer=f"{__name__}:{writer}"))
    hook = sys.unraisablehook
    with pytest.raises(KeyboardInterrupt):
        api.export("fake", target="tflite", out=tmp_path / "exports")
    assert hidden_leftovers(tmp_path) == [] and not (tmp_path / "exports" / "tflite-fp32").exists()
    assert not (tmp_path / "exports" / "tflite-fp32.failed.json").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and sys.unraisablehook is hook
