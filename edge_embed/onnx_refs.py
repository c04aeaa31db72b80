"""The external-data locations an ONNX file names, read without onnx or onnxruntime.

onnxruntime opens every location a model's tensors name, relative to the model's folder; a
bundle from a stranger could name `/etc/...` or `../../`. The runtime must check them before
onnxruntime sees the file, and the core may not import `onnx`, so this reads the few protobuf
messages that can hold a tensor (onnx.proto: model -> graph -> initializer / node attribute ->
tensor -> external_data) straight from the wire format, skipping everything else by its length.
The file is memory-mapped: inline weights are skipped, never read.
"""
from __future__ import annotations

import mmap
from pathlib import Path

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5

# message -> {field number: message kind of that field}, for the fields that can lead to a tensor
MODEL = "model"
GRAPH = "graph"
NODE = "node"
ATTRIBUTE = "attribute"
TENSOR = "tensor"
SPARSE = "sparse"
FUNCTION = "function"
TRAINING = "training"
ENTRY = "entry"
PATHS = {
    MODEL: {7: GRAPH, 20: TRAINING, 25: FUNCTION},
    TRAINING: {1: GRAPH, 2: GRAPH},
    FUNCTION: {7: NODE},
    GRAPH: {1: NODE, 5: TENSOR, 15: SPARSE},
    NODE: {5: ATTRIBUTE},
    ATTRIBUTE: {5: TENSOR, 6: GRAPH, 10: TENSOR, 11: GRAPH, 22: SPARSE, 23: SPARSE},
    SPARSE: {1: TENSOR, 2: TENSOR},
    TENSOR: {13: ENTRY},
}
MAX_DEPTH = 64  # subgraphs inside subgraphs; real models nest two or three deep


class NotOnnx(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise NotOnnx(f"a varint runs past its message at byte {pos}")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf, pos: int, end: int):
    """(field number, wire type, start, stop) of each field of the message buf[pos:end]; for a
    length-delimited field, start:stop is its payload."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            _, stop = _varint(buf, pos, end)
            start = pos
        elif wire == LENGTH:
            size, start = _varint(buf, pos, end)
            stop = start + size
        elif wire in (FIXED64, FIXED32):
            start, stop = pos, pos + (8 if wire == FIXED64 else 4)
        else:
            raise NotOnnx(f"wire type {wire} at byte {pos}")
        if number == 0 or stop > end:
            raise NotOnnx(f"field {number} runs past its message at byte {start}")
        yield number, wire, start, stop
        pos = stop


def _walk(buf, kind: str, pos: int, end: int, found: list[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise NotOnnx(f"messages nested more than {MAX_DEPTH} deep")
    if kind == ENTRY:  # StringStringEntryProto: key 1, value 2
        entry = {number: buf[start:stop] for number, wire, start, stop in _fields(buf, pos, end)
                 if wire == LENGTH}
        if entry.get(1) == b"location":
            try:
                found.append(entry.get(2, b"").decode("utf-8"))
            except UnicodeDecodeError:
                raise NotOnnx("an external-data location is not UTF-8") from None
        return
    inner = PATHS[kind]
    for number, wire, start, stop in _fields(buf, pos, end):
        if wire == LENGTH and number in inner:
            _walk(buf, inner[number], start, stop, found, depth + 1)


def external_data_locations(path: Path) -> list[str]:
    """Every external-data location the ONNX file's tensors name, in file order (repeats kept).
    Raises NotOnnx when the file is not a well-formed protobuf message."""
    with open(path, "rb") as fh:
        if fh.seek(0, 2) == 0:
            raise NotOnnx("the file is empty")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            found: list[str] = []
            _walk(mapped, MODEL, 0, len(mapped), found, 0)
            return found
