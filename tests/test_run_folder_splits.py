"""splits.json (run_folder.write_splits / read_split) on trees with linked files and folders."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from edgecls.data.folder import load_splits
from edgecls.run_folder import read_split, write_splits


def _image(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), shade, np.uint8)).save(path)


def test_linked_files_and_folders_are_recorded_where_the_tree_has_them(tmp_path: Path) -> None:
    root, outside = tmp_path / "data", tmp_path / "elsewhere"
    for label in ("cats", "dogs"):
        for index in range(5):
            _image(root / label / f"{index}.png", 10 * index)
    _image(outside / "far.png", 200)
    _image(outside / "folder" / "deep.png", 220)
    os.symlink(outside / "far.png", root / "cats" / "linked.png")  # a file linked from outside the tree
    os.symlink(outside / "folder", root / "dogs" / "more")  # a folder linked from outside the tree
    splits = load_splits(root, 0.2, 0.2, seed=0)
    run = tmp_path / "run"
    run.mkdir()

    write_splits(run, root, list(splits.classes), {"train": splits.train, "val": splits.val, "test": splits.test})

    recorded = json.loads((run / "splits.json").read_text())
    names = {row[0] for split in ("train", "val", "test") for row in recorded[split]}
    assert {os.path.join("cats", "linked.png"), os.path.join("dogs", "more", "deep.png")} <= names
    for split in ("train", "val", "test"):
        files = read_split(run, split)
        original = getattr(splits, split)
        assert [p.read_bytes() for p in files.paths] == [Path(p).read_bytes() for p in original.paths]
        assert files.labels.tolist() == list(original.labels)


def test_a_relative_data_root_is_recorded_absolute(tmp_path: Path, monkeypatch) -> None:
    for label in ("a", "b"):
        for index in range(3):
            _image(tmp_path / "data" / label / f"{index}.png", index)
    monkeypatch.chdir(tmp_path)
    splits = load_splits("data", 0.0, 0.0, seed=0)
    run = tmp_path / "run"
    run.mkdir()
    write_splits(run, Path("data"), list(splits.classes), {"train": splits.train, "val": splits.val, "test": splits.test})
    monkeypatch.chdir("/")
    files = read_split(run, "train")
    assert len(files.paths) == 6 and all(p.is_absolute() and p.is_file() for p in files.paths)
