"""Pure-Python FlatBuffers reading, and adding Model.metadata entries to a .tflite without re-serialising it.

Reading: `Table` follows the FlatBuffers binary layout (a table starts with a signed offset to its
vtable; the vtable lists each field's offset; offsets to strings, vectors and sub-tables are unsigned
and point forward). Every access is bounds-checked and raises ValueError on a corrupt buffer.

Writing (`add_metadata`): a TFLite Model's root table is rebuilt in a prefix that is placed before an
untouched copy of the original flatbuffer. The new root keeps the original's fields (pointing forward
into the copy, which FlatBuffers' forward-only offsets allow) and gets new `buffers` and `metadata`
vectors. The prefix is a multiple of 64 bytes long, so every weight buffer keeps its alignment. No
TensorFlow and no generated schema code: the model's tensors and weights are never parsed or copied
field by field, so any valid model (Edge TPU custom ops included) passes through unchanged.
"""
from __future__ import annotations

import struct

TFLITE_IDENTIFIER = b"TFL3"
PREFIX_ALIGN = 64  # keeps the 16-byte alignment TFLite gives weight buffers (and more)
DATA_ALIGN = 16  # Buffer.data has force_align: 16 in schema.fbs

# schema.fbs field indices
MODEL_VERSION, MODEL_OPERATOR_CODES, MODEL_SUBGRAPHS, MODEL_DESCRIPTION = 0, 1, 2, 3
MODEL_BUFFERS, MODEL_METADATA_BUFFER, MODEL_METADATA, MODEL_SIGNATURE_DEFS = 4, 5, 6, 7
MODEL_FIELDS = 8
BUFFER_DATA, BUFFER_OFFSET, BUFFER_SIZE = 0, 1, 2
METADATA_NAME, METADATA_BUFFER = 0, 1


class Table:
    """A read-only view of one FlatBuffers table at absolute position `pos` of `data`."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos
        self._check(pos, 4)
        self.vtable = pos - struct.unpack_from("<i", data, pos)[0]
        self._check(self.vtable, 4)
        self.vtable_size = struct.unpack_from("<H", data, self.vtable)[0]
        self._check(self.vtable, self.vtable_size)

    @classmethod
    def root(cls, data: bytes, identifier: bytes | None = None) -> Table:
        if len(data) < 8:
            raise ValueError(f"{len(data)} bytes are too few for a FlatBuffer")
        if identifier is not None and data[4:8] != identifier:
            raise ValueError(f"file identifier is {data[4:8]!r}, expected {identifier!r}")
        return cls(data, struct.unpack_from("<I", data, 0)[0])

    def _check(self, pos: int, size: int) -> None:
        if pos < 0 or size < 0 or pos + size > len(self.data):
            raise ValueError(f"offset {pos}+{size} lies outside the {len(self.data)}-byte buffer")

    def field(self, index: int) -> int | None:
        """Absolute position of field `index`, None when the field is absent (default value)."""
        entry = 4 + 2 * index
        if entry + 2 > self.vtable_size:
            return None
        offset = struct.unpack_from("<H", self.data, self.vtable + entry)[0]
        return self.pos + offset if offset else None

    def scalar(self, index: int, fmt: str, default: int | float = 0) -> int | float:
        pos = self.field(index)
        if pos is None:
            return default
        self._check(pos, struct.calcsize(fmt))
        value: int | float = struct.unpack_from("<" + fmt, self.data, pos)[0]
        return value

    def _target(self, index: int) -> int | None:
        pos = self.field(index)
        if pos is None:
            return None
        self._check(pos, 4)
        return pos + struct.unpack_from("<I", self.data, pos)[0]

    def table(self, index: int) -> Table | None:
        target = self._target(index)
        return None if target is None else Table(self.data, target)

    def vector(self, index: int) -> tuple[int, int]:
        """(length, position of the first element); (0, 0) when absent."""
        target = self._target(index)
        if target is None:
            return 0, 0
        self._check(target, 4)
        return struct.unpack_from("<I", self.data, target)[0], target + 4

    def bytes(self, index: int) -> bytes | None:
        length, start = self.vector(index)
        if not start:
            return None
        self._check(start, length)
        return bytes(self.data[start : start + length])

    def string(self, index: int) -> str | None:
        raw = self.bytes(index)
        return None if raw is None else raw.decode("utf-8")

    def scalars(self, index: int, fmt: str) -> list[int | float]:
        length, start = self.vector(index)
        size = struct.calcsize(fmt)
        self._check(start, length * size)
        return [struct.unpack_from("<" + fmt, self.data, start + i * size)[0] for i in range(length)]

    def tables(self, index: int) -> list[Table]:
        return [Table(self.data, pos) for pos in self.table_positions(index)]

    def table_positions(self, index: int) -> list[int]:
        length, start = self.vector(index)
        self._check(start, 4 * length)
        return [start + 4 * i + struct.unpack_from("<I", self.data, start + 4 * i)[0] for i in range(length)]

    def strings(self, index: int) -> list[str]:
        out = []
        for pos in self.table_positions(index):  # a vector of strings holds offsets, like a vector of tables
            self._check(pos, 4)
            length = struct.unpack_from("<I", self.data, pos)[0]
            self._check(pos + 4, length)
            out.append(self.data[pos + 4 : pos + 4 + length].decode("utf-8"))
        return out


class _Writer:
    """Lays out the new prefix front to back; offsets are patched once every position is known."""

    def __init__(self) -> None:
        self.out = bytearray(8)  # root offset + file identifier
        self.patches: list[tuple[int, str]] = []  # (position of a uoffset, key of its target)
        self.places: dict[str, int] = {}

    def pad(self, alignment: int, before: int = 0) -> None:
        """Pad so that position + `before` is a multiple of `alignment`."""
        while (len(self.out) + before) % alignment:
            self.out.append(0)

    def table(self, key: str, fields: list[tuple[str, object] | None]) -> None:
        """A table whose fields are ("u32", value) scalars or ("ref", key) offsets; None = absent.

        The vtable is written right before the table (soffset > 0), each field 4 bytes wide.
        """
        self.pad(2)
        size = 4 + 4 * sum(f is not None for f in fields)
        entries, at = [], 4
        for f in fields:
            entries.append(at if f is not None else 0)
            at += 4 if f is not None else 0
        vtable = struct.pack(f"<HH{len(entries)}H", 4 + 2 * len(entries), size, *entries)
        self.pad(4, before=len(vtable))
        vtable_pos = len(self.out)
        self.out += vtable
        table_pos = len(self.out)
        self.places[key] = table_pos
        self.out += struct.pack("<i", table_pos - vtable_pos)
        for f in fields:
            if f is None:
                continue
            kind, value = f
            if kind == "u32":
                self.out += struct.pack("<I", value)
            else:
                self.patches.append((len(self.out), str(value)))
                self.out += b"\0\0\0\0"

    def offsets_vector(self, key: str, targets: list[str]) -> None:
        self.pad(4)
        self.places[key] = len(self.out)
        self.out += struct.pack("<I", len(targets))
        for target in targets:
            self.patches.append((len(self.out), target))
            self.out += b"\0\0\0\0"

    def bytes_vector(self, key: str, data: bytes, alignment: int = 4, terminator: bytes = b"") -> None:
        self.pad(alignment, before=4)
        self.places[key] = len(self.out)
        self.out += struct.pack("<I", len(data)) + data + terminator

    def finish(self, root: str, external: dict[str, int], tail: bytes) -> bytes:
        """Prefix + `tail`; `external` maps keys to positions inside `tail`."""
        self.pad(PREFIX_ALIGN)
        shift = len(self.out)
        places = {**self.places, **{key: shift + pos for key, pos in external.items()}}
        for at, key in self.patches:
            struct.pack_into("<I", self.out, at, places[key] - at)
        struct.pack_into("<I", self.out, 0, places[root])
        self.out[4:8] = TFLITE_IDENTIFIER
        return bytes(self.out) + tail


def add_metadata(model: bytes, entries: dict[str, bytes]) -> bytes:
    """`model` (a TFLite flatbuffer, nothing appended) with Model.metadata entries `entries` (name -> bytes).

    An existing entry of the same name is replaced; its old buffer is left as an unreferenced, empty slot.
    """
    root = Table.root(model, TFLITE_IDENTIFIER)
    buffer_positions = root.table_positions(MODEL_BUFFERS)
    for index, pos in enumerate(buffer_positions):
        if Table(model, pos).scalar(BUFFER_OFFSET, "Q") > 1:
            raise ValueError(f"buffer {index} lies outside the flatbuffer (a model over 2 GB), which this writer does not move")
    kept: list[int] = []
    emptied: set[int] = set()
    for pos in root.table_positions(MODEL_METADATA):
        entry = Table(model, pos)
        if entry.string(METADATA_NAME) in entries:
            emptied.add(int(entry.scalar(METADATA_BUFFER, "I")))
        else:
            kept.append(pos)

    writer = _Writer()
    external: dict[str, int] = {}
    fields: list[tuple[str, object] | None] = []
    for index in range(MODEL_FIELDS):
        if index == MODEL_VERSION:
            fields.append(("u32", int(root.scalar(MODEL_VERSION, "I"))))
        elif index in (MODEL_BUFFERS, MODEL_METADATA):
            fields.append(("ref", f"model.{index}"))
        else:
            target = root._target(index)
            if target is None:
                fields.append(None)
            else:
                external[f"old.{index}"] = target
                fields.append(("ref", f"old.{index}"))
    writer.table("model", fields)

    buffer_keys = []
    for index, pos in enumerate(buffer_positions):
        key = "empty" if index in emptied else f"old.buffer.{index}"
        if key != "empty":
            external[key] = pos
        buffer_keys.append(key)
    new_names = list(entries)
    writer.offsets_vector(f"model.{MODEL_BUFFERS}", buffer_keys + [f"new.buffer.{name}" for name in new_names])
    for i, pos in enumerate(kept):
        external[f"old.metadata.{i}"] = pos
    writer.offsets_vector(f"model.{MODEL_METADATA}",
                          [f"old.metadata.{i}" for i in range(len(kept))] + [f"new.metadata.{name}" for name in new_names])
    first_new = len(buffer_positions)
    for i, name in enumerate(new_names):
        writer.table(f"new.metadata.{name}", [("ref", f"name.{name}"), ("u32", first_new + i)])
        writer.bytes_vector(f"name.{name}", name.encode("utf-8"), terminator=b"\0")
    if emptied:
        writer.table("empty", [])
    for name in new_names:
        writer.table(f"new.buffer.{name}", [("ref", f"data.{name}")])
        writer.bytes_vector(f"data.{name}", entries[name], alignment=DATA_ALIGN)
    return writer.finish("model", external, model)


def metadata_entries(model: bytes) -> dict[str, bytes]:
    """name -> bytes of every Model.metadata entry (buffers kept inside the flatbuffer or after it)."""
    root = Table.root(model, TFLITE_IDENTIFIER)
    buffers = root.table_positions(MODEL_BUFFERS)
    found: dict[str, bytes] = {}
    for entry in root.tables(MODEL_METADATA):
        name = entry.string(METADATA_NAME) or ""
        index = int(entry.scalar(METADATA_BUFFER, "I"))
        if index >= len(buffers):
            raise ValueError(f"metadata '{name}' points at buffer {index} of {len(buffers)}")
        buffer = Table(model, buffers[index])
        data = buffer.bytes(BUFFER_DATA)
        offset, size = int(buffer.scalar(BUFFER_OFFSET, "Q")), int(buffer.scalar(BUFFER_SIZE, "Q"))
        if not data and offset > 1:
            if offset + size > len(model):
                raise ValueError(f"metadata '{name}' lies at {offset}+{size}, past the end of the file")
            data = bytes(model[offset : offset + size])
        found[name] = data or b""
    return found
