"""Control characters in class names, labels and file names never reach the terminal or a model's metadata raw."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgecls.cli.common import printable
from edgecls.errors import ModelError
from edgecls.meta import ModelMeta
from tests.conftest import assert_clean_error, run_cli
from tests.test_data import make_tree

RETITLE = "\x1b]0;PWNED\x07\x1b[31m"  # an OSC sequence that retitles the terminal, then red text


@pytest.mark.parametrize("label", [f"ca{RETITLE}t", "two\nlines", "rtl\u202etxt.exe", "bell\x07"])
def test_labels_with_control_characters_are_refused(label: str, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"labels\[0\] .* holds a control character"):
        ModelMeta("x", (16, 16), [label, "dog"]).check()
    ModelMeta("x", (16, 16), ["cat", "dog"]).save(tmp_path)
    text = (tmp_path / "meta.json").read_text().replace('"cat"', '"c\\u001b[2Jat"')  # a tampered meta.json
    (tmp_path / "meta.json").write_text(text)
    with pytest.raises(ModelError, match="holds a control character"):
        ModelMeta.load(tmp_path / "meta.json")


def test_printable_class_names_in_any_script_are_kept() -> None:
    ModelMeta("x", (16, 16), ["می\u200cخواهم", "T-shirt/top", "中文", "café au lait"]).check()  # a ZWNJ is text


def test_a_class_folder_with_an_escape_sequence_is_one_clean_error(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "data", {f"cat{RETITLE}": 4, "dog": 4})
    for args in (("data", "check", tree), ("train", "--data", tree, "--model", "plain_cnn", "--out", tmp_path / "run")):
        result = run_cli(*args, cwd=tmp_path)
        assert_clean_error(result, "holds a control character", "Rename the folder")
        assert "\x1b" not in result.output and "\x07" not in result.output
    assert not (tmp_path / "run").exists()


def test_file_names_reach_the_terminal_without_their_control_characters(tmp_path: Path) -> None:
    assert printable(f"a{RETITLE}b\nc") == "a?]0;PWNED??[31mb?c"
    assert printable("line one\nline\ttwo\x1b", keep_lines=True) == "line one\nline\ttwo?"
    missing = tmp_path / f"img{RETITLE}.png"
    result = run_cli("predict", "efficientnet_lite0", missing, cwd=tmp_path)
    assert_clean_error(result, "img?]0;PWNED??[31m.png")
    assert "\x1b" not in result.output
