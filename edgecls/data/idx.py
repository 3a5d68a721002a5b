"""Read IDX files (the MNIST / Fashion-MNIST container), gzipped or not, into numpy.

Format: two zero bytes, a dtype code, the number of dimensions, then one big-endian uint32 per
dimension, then the values in C order, big-endian. Anything that does not match exactly (bad
magic, unknown dtype, too few or too many bytes) raises DataError naming the file.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from edgecls.errors import DataError

# IDX dtype code -> big-endian numpy dtype
IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
MAX_DIMS = 8
_GZIP_MAGIC = b"\x1f\x8b"
_HINT = "Replace it with an intact copy (apt-get install --reinstall dataset-fashion-mnist, or download it again)"


def parse_idx(data: bytes, name: str = "<bytes>", expect_ndim: int | None = None) -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file; `name` is used in error messages."""
    if len(data) < 4:
        raise DataError(f"'{name}' is not an IDX file: only {len(data)} bytes", _HINT)
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise DataError(f"'{name}' is not an IDX file: bad magic bytes {data[:4].hex()}", _HINT)
    if code not in IDX_DTYPES:
        raise DataError(f"'{name}' has unknown IDX dtype code 0x{code:02x}", _HINT)
    if not 1 <= ndim <= MAX_DIMS:
        raise DataError(f"'{name}' declares {ndim} dimensions (expected 1 to {MAX_DIMS})", _HINT)
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataError(f"'{name}' has {ndim} dimensions, expected {expect_ndim}", "Check that the images and labels files are not swapped")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"'{name}' is truncated: its header needs {header} bytes, the file has {len(data)}", _HINT)
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(IDX_DTYPES[code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual < expected:
        raise DataError(f"'{name}' is truncated: shape {shape} needs {expected} data bytes, found {actual}", _HINT)
    if actual > expected:
        raise DataError(f"'{name}' has {actual - expected} unexpected bytes after its data (shape {shape})", _HINT)
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False) if dtype.byteorder == ">" else array


def read_idx_bytes(path: str | Path) -> bytes:
    """The uncompressed bytes of an IDX file; gzip is detected from the content, not the suffix."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"IDX file '{path}' does not exist", "Check the path") from exc
    except IsADirectoryError as exc:
        raise DataError(f"'{path}' is a folder, not an IDX file", "Pass the file itself") from exc
    except OSError as exc:
        raise DataError(f"cannot read IDX file '{path}': {exc.strerror}", "Check its permissions") from exc
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"'{path}' is a damaged gzip file ({type(exc).__name__}: {exc})", _HINT) from exc


def read_idx(path: str | Path, expect_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a native-endian numpy array."""
    return parse_idx(read_idx_bytes(path), str(path), expect_ndim)
