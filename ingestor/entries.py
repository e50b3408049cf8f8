"""Stream entries, packed straight into Redis protocol (RESP) bytes: the ingestor's hot path.

Every order-book frame becomes one partition-stream entry with the fields of
:meth:`pipeline.records.BookRecord.fields`, every print one entry with those of
:meth:`pipeline.records.TradeRecord.fields`, every LivePrice one with those of
:meth:`pipeline.records.PriceRecord.fields`. Going through the records and redis-py costs about
25 µs a frame; at the feed rates we aim for (tens of thousands of frames a second) that is the
whole budget, so order-book frames take a fast path that slices the field values out of the
frame's bytes and formats the RESP arguments in one ``bytes % tuple`` operation.

The fast path only handles the common, well-formed shape (ASCII body, ``+07:00`` exchange time
with 1–9 fractional digits); anything else returns ``None`` and goes through the ordinary
decoder and :mod:`pipeline.records`, so both paths give byte-identical entries (a property test
checks this) and malformed frames raise the codec's one error type.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import NamedTuple

from pipeline.keys import Keys
from pipeline.records import BookRecord, PriceRecord, TradeRecord
from stockbit.errors import ProtocolError
from stockbit.timestamps import WIB, parse_iso, wib_iso

BOOK_TAG = 0x52
"""First byte of a wrapper carrying field 10 (order book) with a length prefix."""

TRADE = b"t"
PRICE = b"p"
BID = b"B"
OFFER = b"O"
_SIDES = {b"BID": BID, b"OFFER": OFFER}
_WIB_SUFFIX = b"+07:00"

# The XADD command of a book entry: 22 arguments (XADD, key, MAXLEN ~ n *, then the 8 fields
# of BookRecord.fields() in its order: k c s q t l r i); the %-slots take the values.
_BOOK_TEMPLATE = (
    b"*22\r\n$4\r\nXADD\r\n%s"
    b"$1\r\nk\r\n$1\r\nb\r\n"
    b"$1\r\nc\r\n$%d\r\n%s\r\n"
    b"$1\r\ns\r\n$1\r\n%s\r\n"
    b"$1\r\nq\r\n$%d\r\n%s\r\n"
    b"$1\r\nt\r\n$32\r\n%s\r\n"
    b"$1\r\nl\r\n$%d\r\n%s\r\n"
    b"$1\r\nr\r\n$%d\r\n%s\r\n"
    b"$1\r\ni\r\n%s"
)


class Entry(NamedTuple):
    """One stream entry ready to send, plus what the per-ticker figures need."""

    code: str
    kind: bytes
    """``B`` or ``O`` for a book side, ``t`` for a print, ``p`` for a live price."""
    levels: bytes
    """The level text of a book side (``price;orders;shares|...``); for a live price the
    figures the ticker HASH shows, ``last;previous close;shares``; empty for a print."""
    received: bytes
    command: bytes
    """The whole ``XADD stream MAXLEN ~ n * field value ...`` command in RESP."""


def bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def command(*parts: bytes | str | int) -> bytes:
    """A whole RESP command (for the few non-hot commands packed by hand)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        out.append(bulk(raw))
    return b"".join(out)


class ReceivedClock:
    """Receive times as WIB ISO-8601 bytes with microseconds, cheaply.

    Formatting a datetime costs about a microsecond; the date-and-second prefix only changes
    once a second, so it is cached (as a template with a slot for the fraction) and only the
    microseconds are formatted per frame, in integer arithmetic on ``time.time_ns()``.
    """

    def __init__(self) -> None:
        self._second = -1
        self._template = b""

    def now(self) -> bytes:
        """The current wall-clock time, e.g. ``b"2026-03-02T10:15:30.123456+07:00"``."""
        nanos = time.time_ns()
        second = nanos // 1_000_000_000
        if second != self._second:
            self._second = second
            stamp = datetime.fromtimestamp(second, WIB).strftime("%Y-%m-%dT%H:%M:%S")
            self._template = stamp.encode() + b".%06d+07:00"
        return self._template % (nanos // 1000 % 1_000_000)


_new_entry = tuple.__new__
"""What ``Entry(...)`` ends up calling, minus its Python-level ``__new__`` frame (hot path)."""


class EntryPacker:
    """Builds :class:`Entry` values for one ingestor (its id goes into every entry)."""

    def __init__(self, keys: Keys, source: str, maxlen: int) -> None:
        self.keys = keys
        self.source = source.encode()
        self._source_arg = bulk(self.source)
        self._cap = b"$6\r\nMAXLEN\r\n$1\r\n~\r\n" + bulk(b"%d" % maxlen) + b"$1\r\n*\r\n"
        self._stream_args: dict[bytes, bytes] = {}
        self._valid_seconds: set[bytes] = set()

    def stream_arg(self, code: bytes) -> bytes:
        """``key MAXLEN ~ n *`` of the partition stream of ``code`` (cached per code)."""
        arg = self._stream_args.get(code)
        if arg is None:
            arg = bulk(self.keys.stream_for(code.decode()).encode()) + self._cap
            self._stream_args[code] = arg
        return arg

    # ---- the fast path ---------------------------------------------------------------------

    def book(self, frame: bytes, received: bytes) -> Entry | None:
        """Pack an order-book frame, or return None when the fast path does not apply.

        None means "decode it the ordinary way": the frame is not a plain order book, or has a
        shape this path does not check (non-ASCII text, an exchange time not in ``+07:00``,
        unusual field types). It never means the frame was dropped.
        """
        end = len(frame)
        if end < 3 or frame[0] != BOOK_TAG:
            return None
        # Wrapper length: one or two varint bytes cover every frame up to 16 KiB.
        length = frame[1]
        pos = 2
        if length >= 0x80:
            second = frame[2]
            if second >= 0x80:
                return None
            length = (length & 0x7F) | (second << 7)
            pos = 3
        if pos + length != end:
            return None
        code = body = stamp = itch = b""
        seq = 0
        while pos < end:
            key = frame[pos]
            pos += 1
            wire_type = key & 7
            if key < 8 or pos >= end:
                return None  # field number 0 (an error) or a key with nothing after it
            if wire_type == 2:
                size = frame[pos]
                pos += 1
                if size >= 0x80:
                    if pos >= end:
                        return None
                    second = frame[pos]
                    if second >= 0x80:
                        return None
                    size = (size & 0x7F) | (second << 7)
                    pos += 1
                stop = pos + size
                if stop > end:
                    return None
                if key == 0x12:
                    body = frame[pos:stop]
                elif key == 0x0A:
                    code = frame[pos:stop]
                elif key == 0x2A:
                    stamp = frame[pos:stop]
                elif key == 0x4A:
                    itch = frame[pos:stop]
                else:
                    return None
                pos = stop
            elif wire_type == 0 and key < 0x80:
                value = 0
                shift = 0
                while True:
                    if pos >= end or shift > 63:
                        return None
                    byte = frame[pos]
                    pos += 1
                    value |= (byte & 0x7F) << shift
                    if byte < 0x80:
                        break
                    shift += 7
                if key == 0x18:
                    seq = value
            else:
                return None
        if not code or not body.startswith(b"#O|") or not body.isascii() or not code.isascii():
            return None
        bar = body.find(b"|", 3)
        if bar < 0 or body[3:bar] != code:
            return None
        nxt = body.find(b"|", bar + 1)
        if nxt < 0:
            side = _SIDES.get(body[bar + 1 :])
            levels = b""
        else:
            side = _SIDES.get(body[bar + 1 : nxt])
            levels = body[nxt + 1 :]
        if side is None:
            return None
        exchange_time = self._canonical_time(stamp)
        if exchange_time is None or (itch and not self._valid_time(itch)):
            # The ordinary decoder parses the ITCH time too, so it must be valid here as well.
            return None
        # The cache lookup inline: a method call per frame costs more than the lookup itself.
        stream_arg = self._stream_args.get(code) or self.stream_arg(code)
        seq_text = b"%d" % seq
        packed = _BOOK_TEMPLATE % (
            stream_arg,
            len(code),
            code,
            side,
            len(seq_text),
            seq_text,
            exchange_time,
            len(levels),
            levels,
            len(received),
            received,
            self._source_arg,
        )
        return _new_entry(Entry, (code.decode(), side, levels, received, packed))

    def _valid_time(self, stamp: bytes) -> bool:
        """True when :meth:`_canonical_time` accepts ``stamp``, without building its result.

        The ITCH time is only checked (the entry carries the exchange time), and rebuilding a
        nanosecond stamp in the canonical layout is most of the cost of that check.
        """
        size = len(stamp)
        if size < 27 or size > 35 or stamp[19] != 0x2E or not stamp.endswith(_WIB_SUFFIX):
            return False
        if not stamp.isascii() or not stamp[20:-6].isdigit():
            return False
        # A second already checked needs no canonical form; a new one takes the full check.
        return stamp[:19] in self._valid_seconds or self._canonical_time(stamp) is not None

    def _canonical_time(self, stamp: bytes) -> bytes | None:
        """The exchange time as :func:`~stockbit.timestamps.wib_iso` would print it, or None."""
        size = len(stamp)
        if size < 27 or size > 35 or stamp[19] != 0x2E or not stamp.endswith(_WIB_SUFFIX):
            return None
        if not stamp.isascii():
            return None
        fraction = stamp[20:-6]
        if not fraction.isdigit():
            return None
        if size != 32:
            stamp = stamp[:20] + fraction[:6].ljust(6, b"0") + _WIB_SUFFIX
        second = stamp[:19]
        if second not in self._valid_seconds:
            # Checked once per distinct second: a valid date and time in the canonical layout.
            text = stamp.decode()
            try:
                if wib_iso(parse_iso(text)) != text:
                    return None
            except ProtocolError:
                return None
            if len(self._valid_seconds) > 4096:
                self._valid_seconds.clear()
            self._valid_seconds.add(second)
        return stamp

    # ---- the general path ------------------------------------------------------------------

    def record(self, record: BookRecord | TradeRecord | PriceRecord, received: bytes) -> Entry:
        """Pack a record built by :mod:`pipeline.records` (its ``r`` replaced by ``received``)."""
        fields = record.fields()
        fields["r"] = received.decode()
        code = record.code.encode()
        parts = [b"*%d\r\n$4\r\nXADD\r\n" % (6 + 2 * len(fields)), self.stream_arg(code)]
        for name, value in fields.items():
            parts.append(bulk(name.encode()))
            parts.append(bulk(value.encode()))
        if isinstance(record, BookRecord):
            kind = _SIDES[record.side.encode()]
            levels = record.levels.encode()
        elif isinstance(record, PriceRecord):
            kind = PRICE
            levels = b"%s;%s;%s" % (
                fields["p"].encode(),
                fields["y"].encode(),
                fields["v"].encode(),
            )
        else:
            kind = TRADE
            levels = b""
        return Entry(record.code, kind, levels, received, b"".join(parts))
