"""Read a PyTorch `torch.save` state dict into numpy arrays without PyTorch, and without running code.

Both layouts are supported:
- legacy (torch < 1.6): five pickles back to back (magic number, protocol version, sys info,
  the state dict whose storages are persistent ids, the storage keys), then each storage's
  int64 element count followed by its raw little-endian bytes;
- zip (torch >= 1.6): `<prefix>/data.pkl` plus one raw file `<prefix>/data/<key>` per storage.

The unpickler is restricted: it resolves only the handful of globals a state dict needs and
refuses anything else, so a malicious file cannot run code.
"""
from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgecls.errors import CheckpointError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch storage class name -> little-endian numpy dtype ("bfloat16" is widened to float32).
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}

_FIX = "Re-download the weights package, or re-save the checkpoint as a plain state dict"


@dataclass(frozen=True)
class _StorageRef:
    """A storage named by a persistent id; its bytes are read after the main pickle."""

    key: str
    dtype: str
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """A strided view of a storage, as `torch._utils._rebuild_tensor_v2` describes it."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _storage_type(name: str) -> type:
    """A stand-in class for `torch.<name>`: only its name matters."""
    return type(name, (), {"dtype": STORAGE_DTYPES[name]})


_STORAGE_TYPES = {name: _storage_type(name) for name in STORAGE_DTYPES}


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, *_unused: Any) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise CheckpointError(f"a tensor is built from {type(storage).__name__}, not a storage", _FIX)
    try:
        return _TensorRef(storage, int(storage_offset), tuple(int(v) for v in size), tuple(int(v) for v in stride))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"a tensor has a malformed size or stride ({exc})", _FIX) from exc


def _rebuild_parameter(data: Any, *_unused: Any) -> Any:
    return data  # nn.Parameter(tensor) -> the tensor itself


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a state dict needs; everything else is refused."""

    def __init__(self, file: IO[bytes], source: str, storages: dict[str, _StorageRef]) -> None:
        super().__init__(file)
        self.source = source
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        raise CheckpointError(
            f"checkpoint '{self.source}' asks for global '{module}.{name}'; refused: a checkpoint must never run code",
            "Use a trusted checkpoint that holds only a state dict of tensors",
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
            raise CheckpointError(f"checkpoint '{self.source}' has an unsupported persistent id {pid!r:.80}", _FIX)
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if len(pid) > 5 and pid[5] is not None:
            raise CheckpointError(f"checkpoint '{self.source}' uses storage views, which are not supported", _FIX)
        dtype = getattr(storage_type, "dtype", None)
        if dtype is None or not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"checkpoint '{self.source}' has a malformed storage id {pid!r:.80}", _FIX)
        if key not in self.storages:
            self.storages[key] = _StorageRef(key, dtype, numel)
        return self.storages[key]


def _unpickle(file: IO[bytes], source: str, storages: dict[str, _StorageRef]) -> Any:
    try:
        return _RestrictedUnpickler(file, source, storages).load()
    except CheckpointError:
        raise
    except Exception as exc:  # pickle raises many types on corrupt input
        raise CheckpointError(f"'{source}' is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})", _FIX) from exc


def _decode(raw: bytes, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(raw, dtype=np.dtype(dtype))


def _itemsize(dtype: str) -> int:
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


def _materialise(name: str, ref: _TensorRef, data: np.ndarray, source: str) -> np.ndarray:
    """Copy the strided view `ref` out of the storage array `data`, after checking its bounds."""
    if len(ref.size) != len(ref.stride) or any(v < 0 for v in ref.size + ref.stride) or ref.offset < 0:
        raise CheckpointError(f"tensor '{name}' in '{source}' has size {ref.size}, stride {ref.stride}", _FIX)
    if 0 in ref.size:
        return np.zeros(ref.size, dtype=data.dtype)
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if last >= data.size:
        raise CheckpointError(
            f"tensor '{name}' in '{source}' reaches element {last} of a storage of {data.size}", _FIX
        )
    item = data.itemsize
    view = np.lib.stride_tricks.as_strided(
        data[ref.offset :], shape=ref.size, strides=[s * item for s in ref.stride], writeable=False
    )
    return np.array(view, dtype=data.dtype.newbyteorder("="), order="C", copy=True)


def _to_arrays(state: Any, storage_data: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    if not isinstance(state, dict):
        raise CheckpointError(f"'{source}' holds a {type(state).__name__}, not a state dict", _FIX)
    arrays: dict[str, np.ndarray] = {}
    for name, value in state.items():
        if not isinstance(value, _TensorRef):
            raise CheckpointError(f"entry '{name}' of '{source}' is a {type(value).__name__}, not a tensor", _FIX)
        arrays[str(name)] = _materialise(str(name), value, storage_data[value.storage.key], source)
    return arrays


def _read_exact(file: IO[bytes], count: int, what: str, source: str) -> bytes:
    raw = file.read(count)
    if len(raw) != count:
        raise CheckpointError(f"'{source}' is truncated: {what} needs {count} bytes, {len(raw)} left", _FIX)
    return raw


def _load_legacy(file: IO[bytes], source: str) -> dict[str, np.ndarray]:
    storages: dict[str, _StorageRef] = {}
    if _unpickle(file, source, storages) != LEGACY_MAGIC_NUMBER:
        raise CheckpointError(f"'{source}' is not a PyTorch checkpoint (wrong magic number)", _FIX)
    if _unpickle(file, source, storages) != LEGACY_PROTOCOL_VERSION:
        raise CheckpointError(f"'{source}' uses an unknown legacy protocol version", _FIX)
    sys_info = _unpickle(file, source, storages)
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        raise CheckpointError(f"'{source}' was saved on a big-endian machine", "Re-save it on a little-endian one")
    state = _unpickle(file, source, storages)
    keys = _unpickle(file, source, storages)
    if not isinstance(keys, list):
        raise CheckpointError(f"'{source}' lacks its list of storage keys", _FIX)
    storage_data: dict[str, np.ndarray] = {}
    for key in map(str, keys):
        ref = storages.get(key)
        if ref is None:
            raise CheckpointError(f"'{source}' lists storage '{key}' that no tensor uses", _FIX)
        (numel,) = struct.unpack("<q", _read_exact(file, 8, f"storage '{key}' header", source))
        if numel != ref.numel:
            raise CheckpointError(f"storage '{key}' in '{source}' holds {numel} elements, {ref.numel} expected", _FIX)
        raw = _read_exact(file, numel * _itemsize(ref.dtype), f"storage '{key}'", source)
        storage_data[key] = _decode(raw, ref.dtype)
    missing = sorted(set(storages) - set(storage_data))
    if missing:
        raise CheckpointError(f"'{source}' lacks the data of storages {missing[:5]}", _FIX)
    return _to_arrays(state, storage_data, source)


def _load_zip(path: Path, source: str) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [name for name in names if name.endswith("data.pkl") and name.count("/") == 1]
        if not pickles:
            raise CheckpointError(f"'{source}' is a zip file without a data.pkl", _FIX)
        prefix = pickles[0][: -len("data.pkl")]
        byteorder_file = prefix + "byteorder"
        if byteorder_file in names and archive.read(byteorder_file).strip() != b"little":
            raise CheckpointError(f"'{source}' was saved big-endian", "Re-save it on a little-endian machine")
        storages: dict[str, _StorageRef] = {}
        state = _unpickle(io.BytesIO(archive.read(pickles[0])), source, storages)
        storage_data: dict[str, np.ndarray] = {}
        for key, ref in storages.items():
            member = f"{prefix}data/{key}"
            if member not in names:
                raise CheckpointError(f"'{source}' lacks storage file '{member}'", _FIX)
            raw = archive.read(member)
            need = ref.numel * _itemsize(ref.dtype)
            if len(raw) < need:
                raise CheckpointError(f"storage '{key}' in '{source}' has {len(raw)} bytes, {need} expected", _FIX)
            storage_data[key] = _decode(raw[:need], ref.dtype)
    return _to_arrays(state, storage_data, source)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict file (legacy or zip) into {name: contiguous numpy array}.

    Raises CheckpointError for missing, truncated or non-checkpoint files and for files that
    reference any global outside the small allowed set (such a file never runs code here).
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{source}' does not exist", "Check the path")
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path, source)
        with path.open("rb") as file:
            return _load_legacy(file, source)
    except CheckpointError:
        raise
    except (OSError, zipfile.BadZipFile, ValueError, EOFError, struct.error) as exc:
        raise CheckpointError(f"cannot read checkpoint '{source}' ({type(exc).__name__}: {exc})", _FIX) from exc
