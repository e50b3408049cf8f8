"""Protocol Buffers wire-format primitives (varints, tags, length-delimited fields).

Only what the Stockbit messages use: wire types 0 (varint), 1 (64-bit), 2 (length-delimited)
and 5 (32-bit). Readers work on ``bytes`` with explicit positions so decoders can walk a
message without copying; they may raise ``IndexError`` on truncation, which the public
decoders translate into :class:`~stockbit.errors.ProtocolError`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from stockbit.errors import ProtocolError

VARINT = 0
FIXED64 = 1
LEN = 2
FIXED32 = 5

_DOUBLE = struct.Struct("<d")
_MAX_VARINT_SHIFT = 63


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Read a varint at ``pos``; return (value, next position)."""
    byte = buf[pos]
    if byte < 0x80:
        return byte, pos + 1
    result = byte & 0x7F
    shift = 7
    pos += 1
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > _MAX_VARINT_SHIFT:
            raise ProtocolError("varint longer than 10 bytes")


def read_length(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read a length prefix; return (start, stop) of the payload, checked against ``end``."""
    length, pos = read_varint(buf, pos)
    stop = pos + length
    if stop > end:
        raise ProtocolError(f"length {length} runs past the end of the message")
    return pos, stop


def skip(buf: bytes, pos: int, end: int, wire_type: int) -> int:
    """Skip one field value of ``wire_type`` starting at ``pos``; return the next position."""
    if wire_type == VARINT:
        return read_varint(buf, pos)[1]
    if wire_type == LEN:
        return read_length(buf, pos, end)[1]
    if wire_type == FIXED64:
        stop = pos + 8
    elif wire_type == FIXED32:
        stop = pos + 4
    else:
        raise ProtocolError(f"unsupported wire type {wire_type}")
    if stop > end:
        raise ProtocolError("fixed-width field runs past the end of the message")
    return stop


def fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """Yield (field number, wire type, value position) for each field in ``buf[start:end]``.

    The caller reads the value at that position if it wants it; the iterator skips it
    either way, so unknown fields are passed over without special handling. Hot paths
    (the order-book decoder) walk the bytes inline instead.
    """
    pos = start
    while pos < end:
        key, pos = read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise ProtocolError("field number 0")
        yield number, wire_type, pos
        pos = skip(buf, pos, end, wire_type)


def read_double(buf: bytes, pos: int, end: int) -> float:
    """Read a little-endian IEEE-754 double at ``pos``."""
    if pos + 8 > end:
        raise ProtocolError("double runs past the end of the message")
    value: float = _DOUBLE.unpack_from(buf, pos)[0]
    return value


def text(buf: bytes, start: int, stop: int) -> str:
    """Decode ``buf[start:stop]`` as UTF-8, raising ProtocolError when it is not."""
    try:
        return buf[start:stop].decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"invalid UTF-8 in string field: {exc.reason}") from None


def expect(wire_type: int, wanted: int, what: str) -> None:
    """Fail unless a field arrived with the wire type its schema gives it."""
    if wire_type != wanted:
        raise ProtocolError(f"{what}: wire type {wire_type}, expected {wanted}")


# ---- writers -------------------------------------------------------------------------------


def varint(value: int) -> bytes:
    """Encode a non-negative int (or a negative int64, two's complement) as a varint."""
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    """Encode a field key."""
    return varint((number << 3) | wire_type)


def len_field(number: int, payload: bytes) -> bytes:
    """Encode a length-delimited field."""
    return tag(number, LEN) + varint(len(payload)) + payload


def str_field(number: int, value: str) -> bytes:
    """Encode a string field."""
    return len_field(number, value.encode())


def varint_field(number: int, value: int) -> bytes:
    """Encode a varint field."""
    return tag(number, VARINT) + varint(value)


def double_field(number: int, value: float) -> bytes:
    """Encode a double field."""
    return tag(number, FIXED64) + _DOUBLE.pack(value)
