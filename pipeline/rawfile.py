"""The raw-frame archive's file format, in one home: written by :mod:`ingestor.archive`, read
by ``obpipe replay`` (:mod:`jobs.replay`) and the tests.

A raw file (``raw/YYYY-MM-DD/<ingestor>.<n>.zst``, :mod:`pipeline.layout`) is **one zstd frame**
(content checksum on) holding a sequence of records, each length-prefixed::

    record := length:u32 LE | kind:u8 | time:32 bytes | payload[length]

``time`` is the receive time as the ingestor's clock prints it, ASCII ISO-8601 in Jakarta
time with microseconds (``2026-03-02T10:15:30.123456+07:00``): for a frame, the very bytes its
stream entries carry (``received_at`` in the CSVs), so a replay gives them back unchanged. Text
rather than an integer because the writer thread then packs a batch in C-level ``map``/``join``
calls, with no per-frame Python work holding the GIL the receive loop needs (the zstd window
absorbs the repetition). Kinds:

- :data:`HEADER` — first record of every file; JSON payload (format, version, ingestor, n, day);
- :data:`BINARY` / :data:`TEXT` — a websocket message as received (text as UTF-8);
- :data:`LOSS` — frames the archive could *not* keep (queue full, disk floor, write error):
  JSON ``{"frames", "bytes", "first_us", "last_us", "reason"}``, written as soon as it can;
- :data:`END` — the file was closed on purpose (day rollover, shutdown); JSON with counts.

**Why this shape.** The writer compresses as it goes and flushes a zstd *block* at least
every second, so a file cut by a crash or ``kill -9`` decodes up to its last flushed block;
the length prefix then tells a complete last record from a torn one, which the reader skips
and reports (:class:`RawFile` ``torn_bytes``), never guesses at. A file without its ``END``
record and zstd epilogue was not closed cleanly (``complete`` is False). Why zstd and not the
standard library's gzip: see ``BENCHMARKS.md`` ("Raw archive") — on a simulated
whole-market feed, zstd with an 8 MiB long-distance window keeps ~9× (gzip level 1: 2.2×)
at under half of gzip's CPU, because the previous snapshot of the same book side is megabytes back
in the stream, far outside deflate's 32 KiB window.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain, repeat
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, cast

import zstandard

from stockbit.timestamps import WIB

MAGIC = "obpipe-raw"
"""``format`` of the header record."""
VERSION = 1

HEADER = 0
BINARY = 1
TEXT = 2
LOSS = 3
END = 4
KINDS = (HEADER, BINARY, TEXT, LOSS, END)
FRAMES = (BINARY, TEXT)

RECORD = struct.Struct("<IB32s")
"""The record header: payload length, kind, receive time (32 ASCII bytes)."""
HEAD = struct.Struct("<IB")
"""The first two fields alone (the writer joins the time text in after them)."""
TIME_SIZE = 32
MAX_PAYLOAD = 64 * 1024 * 1024
"""A length above this is not a record (the ingestor refuses frames over 16 MiB)."""

LEVEL = 1
WINDOW_LOG = 23
"""8 MiB: holds several seconds of a whole-market feed, so the previous snapshot of a book
side is within reach of the long-distance matcher (BENCHMARKS.md, "Raw archive")."""
_PARAMS = zstandard.ZstdCompressionParameters.from_level(
    LEVEL,
    window_log=WINDOW_LOG,
    enable_ldm=True,
    # Tuned on simulated feeds: these keep most of the long-distance gain on a whole-market
    # mix at less CPU than plain level 1, and stay cheap on very repetitive books (the
    # defaults cost 3-5x more there).
    ldm_bucket_size_log=1,
    ldm_hash_rate_log=6,
    ldm_min_match=64,
    write_checksum=True,
)
READ_CHUNK = 1 << 20

_MICROS = 1_000_000


class Record(NamedTuple):
    """One record as read back."""

    kind: int
    received: bytes
    """The receive time text (for header, loss and end records: when they were written)."""
    payload: bytes

    @property
    def time_us(self) -> int:
        """:attr:`received` as µs since the epoch."""
        return _STAMPS.micros(self.received)

    def json(self) -> dict[str, Any]:
        """The JSON payload of a header, loss or end record."""
        value: dict[str, Any] = json.loads(self.payload)
        return value

    @property
    def frame(self) -> bytes | str:
        """The websocket message of a frame record, as the ingestor's receive loop got it."""
        return self.payload.decode() if self.kind == TEXT else self.payload


# ---- receive times ------------------------------------------------------------------------


class Stamps:
    """Receive-time text ⇄ microseconds, with the per-second part cached both ways.

    The text is the ingestor's (``ingestor.entries.ReceivedClock``):
    ``2026-03-02T10:15:30.123456+07:00``, always Jakarta time, always 32 bytes.
    """

    __slots__ = ("_seconds", "_texts")

    def __init__(self) -> None:
        self._seconds: dict[bytes, int] = {}
        self._texts: dict[int, bytes] = {}

    def micros(self, text: bytes) -> int:
        """``text`` as µs since the epoch; ValueError if it is not in that exact form."""
        if len(text) != 32 or text[19:20] != b"." or text[26:] != b"+07:00":
            raise ValueError(f"not a receive time: {text[:40]!r}")
        prefix = text[:19]
        second = self._seconds.get(prefix)
        if second is None:
            moment = datetime.strptime(prefix.decode(), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=WIB)
            second = int(moment.timestamp())
            if len(self._seconds) > 64:
                self._seconds.clear()
            self._seconds[prefix] = second
        return second * _MICROS + int(text[20:26])

    def text(self, micros: int) -> bytes:
        """µs since the epoch as the receive-time text (the inverse of :meth:`micros`)."""
        second, fraction = divmod(micros, _MICROS)
        template = self._texts.get(second)
        if template is None:
            stamp = datetime.fromtimestamp(second, WIB).strftime("%Y-%m-%dT%H:%M:%S")
            template = stamp.encode() + b".%06d+07:00"
            if len(self._texts) > 64:
                self._texts.clear()
            self._texts[second] = template
        return template % fraction


_STAMPS = Stamps()


def received_text(micros: int) -> bytes:
    """One receive time as text."""
    return _STAMPS.text(micros)


def iso(micros: int) -> str:
    """µs since the epoch as ISO-8601 in Jakarta time (for reports)."""
    return received_text(micros).decode()


# ---- writing --------------------------------------------------------------------------------


def record(kind: int, time_us: int, payload: bytes) -> bytes:
    """One record's bytes (``time_us``: µs since the epoch, written as text)."""
    return RECORD.pack(len(payload), kind, _STAMPS.text(time_us)) + payload


def pack_frames(frames: Sequence[bytes | str], times: Sequence[bytes]) -> bytes:
    """The records of received frames (``times``: their receive time texts), in order.

    The common case (all binary, every time 32 bytes) runs in C-level calls only; a text frame
    or an odd time takes the per-record path (a bad time raises ``ValueError``).
    """
    if str not in set(map(type, frames)) and set(map(len, times)) <= {TIME_SIZE}:
        binary = cast(Sequence[bytes], frames)
        heads = map(HEAD.pack, map(len, binary), repeat(BINARY))
        return b"".join(chain.from_iterable(zip(heads, times, binary, strict=True)))
    parts = []
    for frame, received in zip(frames, times, strict=True):
        if len(received) != TIME_SIZE:
            raise ValueError(f"not a receive time: {received[:40]!r}")
        payload = frame.encode() if isinstance(frame, str) else frame
        kind = TEXT if isinstance(frame, str) else BINARY
        parts.append(RECORD.pack(len(payload), kind, received) + payload)
    return b"".join(parts)


def json_record(kind: int, time_us: int, value: dict[str, Any]) -> bytes:
    """A header, loss or end record with a JSON payload."""
    return record(kind, time_us, json.dumps(value, separators=(",", ":")).encode())


def header(ingestor: str, number: int, day: str, time_us: int) -> bytes:
    """The first record of a file."""
    return json_record(
        HEADER,
        time_us,
        {"format": MAGIC, "version": VERSION, "ingestor": ingestor, "n": number, "day": day},
    )


class Compressor:
    """The compressing half of a raw file: records in, zstd bytes out (no I/O here).

    :meth:`add` may return nothing (zstd buffers up to a block); :meth:`flush` ends the
    current block so everything added so far can be decoded from the bytes returned until
    now; :meth:`finish` ends the frame (epilogue with the checksum).
    """

    def __init__(self) -> None:
        self._obj = zstandard.ZstdCompressor(compression_params=_PARAMS).compressobj()

    def add(self, data: bytes) -> bytes:
        """Compress ``data`` (whole records)."""
        return self._obj.compress(data)

    def flush(self) -> bytes:
        """End the current block: the file is then readable up to here."""
        return self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def finish(self) -> bytes:
        """End the frame; nothing may be added afterwards."""
        return self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


# ---- reading --------------------------------------------------------------------------------


@dataclass
class RawFile:
    """What reading one raw file found besides its records (filled as it is read)."""

    path: Path
    header: dict[str, Any] = field(default_factory=dict)
    records: int = 0
    frames: int = 0
    complete: bool = False
    """The file ended with its END record and the zstd epilogue: it was closed on purpose."""
    torn_bytes: int = 0
    """Bytes after the last complete record (a crash tore the last one): skipped."""
    error: str | None = None
    """Why reading stopped early (corrupt data, not a raw file), if it did."""

    @property
    def problem(self) -> str | None:
        """A one-line description of anything short of a clean, complete file."""
        if self.error:
            return self.error
        if self.torn_bytes:
            return f"torn tail: {self.torn_bytes} byte(s) after the last complete record skipped"
        if not self.complete:
            return "not closed cleanly (the process ended without closing it)"
        return None


def read(path: Path, info: RawFile | None = None) -> Iterator[Record]:
    """Every complete record of the raw file at ``path``, in order.

    Never raises for damage: a torn tail is skipped and counted, corrupt data ends the file
    early with ``info.error`` set (``info`` is filled in as the records are read; pass your
    own to see it). ``OSError`` if the file cannot be opened.
    """
    info = info if info is not None else RawFile(path)
    with path.open("rb") as handle:
        yield from _records(handle, info)


def _records(handle: BinaryIO, info: RawFile) -> Iterator[Record]:
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    buffer = bytearray()
    ended = False
    first = True
    size = RECORD.size
    while True:
        chunk = handle.read(READ_CHUNK)
        if not chunk:
            break
        try:
            buffer += decompressor.decompress(chunk)
        except zstandard.ZstdError as exc:
            info.error = f"corrupt zstd data: {exc}"
            break
        pos = 0
        end = len(buffer)
        while end - pos >= size:
            length, kind, received = RECORD.unpack_from(buffer, pos)
            if kind not in KINDS or length > MAX_PAYLOAD or (first and kind != HEADER):
                info.error = f"not a raw record at byte {pos} of the decompressed stream"
                return
            if end - pos - size < length:
                break
            payload = bytes(buffer[pos + size : pos + size + length])
            pos += size + length
            info.records += 1
            if first:
                first = False
                try:
                    info.header = json.loads(payload)
                except ValueError:
                    info.error = "header record is not JSON"
                    return
                if info.header.get("format") != MAGIC:
                    info.error = "not an obpipe raw file"
                    return
            if kind in FRAMES:
                info.frames += 1
            elif kind == END:
                ended = True
            yield Record(kind, received, payload)
        del buffer[:pos]
        if decompressor.eof:
            break
    info.torn_bytes = len(buffer)
    info.complete = ended and decompressor.eof and not buffer and info.error is None
