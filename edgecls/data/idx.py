"""Read IDX files (the MNIST / Fashion-MNIST container), gzipped or not, into numpy.

Format: two zero bytes, a dtype code, the number of dimensions, then one big-endian uint32 per
dimension, then the values in C order, big-endian. Anything that does not match exactly (bad
magic, unknown dtype, too few or too many bytes) raises DataError naming the file. Gzip is unpacked in
bounded steps, never past the size the header declares nor `max_bytes` (a small gzip can unpack to GiBs).
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

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
# Largest unpacked IDX file read by default; (Fashion-)MNIST's largest, the train images, is 47 MB.
MAX_IDX_BYTES = 64 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_HINT = "Replace it with an intact copy (apt-get install --reinstall dataset-fashion-mnist, or download it again)"


def _parse_header(data: bytes, name: str, expect_ndim: int | None) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, big-endian dtype, header length) from the first bytes of an IDX file."""
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
    return struct.unpack(f">{ndim}I", data[4:header]), np.dtype(IDX_DTYPES[code]), header


def parse_idx(data: bytes, name: str = "<bytes>", expect_ndim: int | None = None) -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file; `name` is used in error messages."""
    shape, dtype, header = _parse_header(data, name, expect_ndim)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual < expected:
        raise DataError(f"'{name}' is truncated: shape {shape} needs {expected} data bytes, found {actual}", _HINT)
    if actual > expected:
        raise DataError(f"'{name}' has {actual - expected} unexpected bytes after its data (shape {shape})", _HINT)
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False) if dtype.byteorder == ">" else array


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1_000_000 else f"{count:,} bytes"


def unpack_idx(stream: BinaryIO, name: str, max_bytes: int = MAX_IDX_BYTES) -> bytes:
    """The uncompressed bytes of the IDX file in `stream` (gzip detected from the content), read in bounded steps.

    Never holds more than `max_bytes` + 1 unpacked bytes: the header is read first, a declared size above
    `max_bytes` is refused, and no more than the declared size + 1 byte is unpacked (a gzip bomb stops there).
    Raises DataError naming `name` for a damaged gzip, a file that unpacks past its header or past `max_bytes`.
    """
    gzipped = stream.read(2) == _GZIP_MAGIC
    stream.seek(0)
    source: gzip.GzipFile | BinaryIO = gzip.GzipFile(fileobj=stream, mode="rb") if gzipped else stream
    try:
        data = source.read(4)
        data += source.read(4 * data[3] if len(data) == 4 else 0)
        try:
            shape, dtype, header = _parse_header(data, name, None)
        except DataError:
            return data  # parse_idx reports what is wrong with it
        declared = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if declared > max_bytes:
            raise DataError(f"'{name}' declares shape {shape}, {_size(declared)} unpacked, more than the "
                            f"{_size(max_bytes)} accepted", _HINT)
        data += source.read(declared - len(data) + 1)
    except (EOFError, OSError, zlib.error) as exc:
        if not gzipped:
            raise  # a read error of a plain file: the caller names it
        raise DataError(f"'{name}' is a damaged gzip file ({type(exc).__name__}: {exc})", _HINT) from exc
    if len(data) > declared:
        verb = "unpacks to" if gzipped else "holds"
        raise DataError(f"'{name}' {verb} more than {_size(declared)}, the size its header declares (shape {shape})", _HINT)
    return data


def read_idx_bytes(path: str | Path, max_bytes: int = MAX_IDX_BYTES) -> bytes:
    """The uncompressed bytes of an IDX file, at most `max_bytes` (see `unpack_idx`)."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            return unpack_idx(stream, str(path), max_bytes)
    except FileNotFoundError as exc:
        raise DataError(f"IDX file '{path}' does not exist", "Check the path") from exc
    except IsADirectoryError as exc:
        raise DataError(f"'{path}' is a folder, not an IDX file", "Pass the file itself") from exc
    except OSError as exc:
        raise DataError(f"cannot read IDX file '{path}': {exc.strerror}", "Check its permissions") from exc


def read_idx(path: str | Path, expect_ndim: int | None = None, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file (gzipped or not, at most `max_bytes` unpacked) into a native-endian numpy array."""
    return parse_idx(read_idx_bytes(path, max_bytes), str(path), expect_ndim)
