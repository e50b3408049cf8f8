"""Stream entries, packed straight into Redis protocol (RESP) bytes: the ingestor's hot path.

Every order-book frame becomes one partition-stream entry with the fields of
:meth:`pipeline.records.BookRecord.fields`, every print one entry with those of
:meth:`pipeline.records.TradeRecord.fields`, every LivePrice one with those of
:meth:`pipeline.records.PriceRecord.fields`. Going through the decoder, the records and a
generic packer costs 25–70 µs a frame; at the feed rates we aim for (tens of thousands of frames
a second) that is the whole budget, so the three data frames take fast paths that slice the
field values out of the frame's bytes and format the RESP arguments in one ``bytes % tuple``
operation: :meth:`EntryPacker.book` for order books, :meth:`EntryPacker.tape` for trade batches,
single prints and LivePrice.

The fast paths only handle the common, well-formed shape (ASCII text, ``+07:00`` exchange times
with 1–9 fractional digits, trade times in this century, the fields the notes give); anything
else returns ``None`` and goes through the ordinary decoder and :mod:`pipeline.records`, so both
paths give byte-identical entries (property tests check this) and malformed frames raise the
codec's one error type.
"""

from __future__ import annotations

import struct
import time
from datetime import datetime
from typing import NamedTuple

from pipeline.keys import Keys
from pipeline.records import BookRecord, PriceRecord, TradeRecord
from stockbit.errors import ProtocolError
from stockbit.timestamps import WIB, parse_iso, wib_iso

BOOK_TAG = 0x52
"""First byte of a wrapper carrying field 10 (order book) with a length prefix."""
BATCH_TAG = 0x42
"""First byte of a wrapper carrying field 8 (running-trade batch)."""
SINGLE_TAG = 0x0A
"""First byte of a wrapper carrying field 1 (a single print)."""
LIVEPRICE_TAG = 0x4A
"""First byte of a wrapper carrying field 9 (LivePrice)."""
_TAPE_TAGS = frozenset((BATCH_TAG, SINGLE_TAG, LIVEPRICE_TAG))

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

# A print's XADD: 28 arguments, the 11 fields of TradeRecord.fields() in its order
# (k c n p v a o x t r i).
_TRADE_TEMPLATE = (
    b"*28\r\n$4\r\nXADD\r\n%s"
    b"$1\r\nk\r\n$1\r\nt\r\n"
    b"$1\r\nc\r\n$%d\r\n%s\r\n"
    b"$1\r\nn\r\n$%d\r\n%s\r\n"
    b"$1\r\np\r\n$%d\r\n%s\r\n"
    b"$1\r\nv\r\n$%d\r\n%s\r\n"
    b"$1\r\na\r\n$%d\r\n%s\r\n"
    b"$1\r\no\r\n$%d\r\n%s\r\n"
    b"$1\r\nx\r\n$%d\r\n%s\r\n"
    b"$1\r\nt\r\n$32\r\n%s\r\n"
    b"$1\r\nr\r\n$%d\r\n%s\r\n"
    b"$1\r\ni\r\n%s"
)

# A LivePrice's fields before the optional ``q`` (k c p o h l y v x f a b s), in the order of
# PriceRecord.fields(); the rest (``[q] t r i``) is appended per frame.
_PRICE_HEAD = (
    b"$1\r\nk\r\n$1\r\np\r\n"
    b"$1\r\nc\r\n$%d\r\n%s\r\n"
    b"$1\r\np\r\n$%d\r\n%s\r\n"
    b"$1\r\no\r\n$%d\r\n%s\r\n"
    b"$1\r\nh\r\n$%d\r\n%s\r\n"
    b"$1\r\nl\r\n$%d\r\n%s\r\n"
    b"$1\r\ny\r\n$%d\r\n%s\r\n"
    b"$1\r\nv\r\n$%d\r\n%s\r\n"
    b"$1\r\nx\r\n$%d\r\n%s\r\n"
    b"$1\r\nf\r\n$%d\r\n%s\r\n"
    b"$1\r\na\r\n$%d\r\n%s\r\n"
    b"$1\r\nb\r\n$%d\r\n%s\r\n"
    b"$1\r\ns\r\n$%d\r\n%s\r\n"
)
_PRICE_TAIL = b"$1\r\nt\r\n$32\r\n%s\r\n$1\r\nr\r\n$%d\r\n%s\r\n$1\r\ni\r\n%s"
_PRICE_SEQUENCE = b"$1\r\nq\r\n$%d\r\n%s\r\n"

# LivePrice double fields by key byte (field number << 3 | 1), as slots of ``doubles`` below in
# the entry's order: p o h l y v x f a b s.
_PRICE_SLOTS = {
    0x11: 0,  # 2 last
    0x31: 1,  # 6 open
    0x21: 2,  # 4 high
    0x29: 3,  # 5 low
    0x69: 4,  # 13 previous close
    0x19: 5,  # 3 shares
    0x71: 6,  # 14 value
    0x39: 7,  # 7 frequency
    0x51: 8,  # 10 average
    0x41: 9,  # 8 foreign buy
    0x49: 10,  # 9 foreign sell
}
_SEQUENCE_KEY = (0x98, 0x01)
"""Field 19 (``sequence_number``, varint): the one two-byte key the fast path reads."""

# The wire type the decoder insists on per known field number (others it skips, whatever they
# carry): a field that arrives otherwise fails the frame there, so the fast path declines it.
_PRINT_TYPES = {1: 2, 2: 2, 3: 1, 4: 1, 11: 1, 5: 0, 9: 0, 10: 0}
_PRICE_TYPES = {1: 2, 11: 2, **{(key >> 3): 1 for key in _PRICE_SLOTS}}

_double = struct.Struct("<d").unpack_from
# Trade times (protobuf Timestamps) the fast path formats itself: 2000-01-01 to 2100-01-01 UTC,
# where a four-digit year keeps strftime and isoformat in agreement.
_EPOCH_MIN = 946_684_800
_EPOCH_MAX = 4_102_444_800


def _body(frame: bytes, end: int) -> int:
    """Where the wrapper's one message starts (after its tag and length), or -1 when the
    length is not the rest of the frame. One or two length bytes cover every frame up to
    16 KiB; longer ones take the ordinary decoder."""
    length = frame[1]
    pos = 2
    if length >= 0x80:
        second = frame[2]
        if second >= 0x80:
            return -1
        length = (length & 0x7F) | (second << 7)
        pos = 3
    return pos if pos + length == end else -1


def _varint(frame: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, next position) of the varint at ``pos``; value -1 when it runs past ``end``
    or reaches 2**63 (a negative int64, or garbage: the ordinary decoder decides)."""
    result = 0
    shift = 0
    while True:
        if pos >= end or shift > 56:
            return -1, pos
        byte = frame[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _span(frame: bytes, pos: int, end: int) -> int:
    """The end of the length-prefixed value at ``pos`` (a one-byte length: no code or time
    is longer), or -1 when the length takes more bytes or runs past ``end``."""
    size = frame[pos]
    stop = pos + 1 + size
    if size >= 0x80 or stop > end:
        return -1
    return stop


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
        self._epoch_templates: dict[int, bytes] = {}

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
        pos = _body(frame, end)
        if pos < 0:
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

    def tape(self, frame: bytes, received: bytes) -> tuple[Entry, ...] | None:
        """Pack a trade batch, a single print or a LivePrice; None when the fast path does not
        apply (any other frame, or a shape this path does not check), as :meth:`book`.

        A batch gives one entry per print, in the frame's order; an empty batch, or one with
        any print outside the common shape, goes the ordinary way as a whole, so a frame is
        never split between the two paths.
        """
        end = len(frame)
        if end < 3:
            return None
        tag = frame[0]
        if tag not in _TAPE_TAGS:
            return None
        pos = _body(frame, end)
        if pos < 0:
            return None
        if tag == LIVEPRICE_TAG:
            entry = self._price(frame, pos, end, received)
            return None if entry is None else (entry,)
        if tag == SINGLE_TAG:
            entry = self._print(frame, pos, end, received)
            return None if entry is None else (entry,)
        entries: list[Entry] = []
        while pos < end:
            if frame[pos] != 0x0A or pos + 1 >= end:
                return None  # the batch's only field is 1, its prints
            size = frame[pos + 1]
            pos += 2
            if size >= 0x80:
                if pos >= end or frame[pos] >= 0x80:
                    return None
                size = (size & 0x7F) | (frame[pos] << 7)
                pos += 1
            stop = pos + size
            if stop > end:
                return None
            entry = self._print(frame, pos, stop, received)
            if entry is None:
                return None
            entries.append(entry)
            pos = stop
        return tuple(entries) if entries else None

    def _print(self, frame: bytes, pos: int, end: int, received: bytes) -> Entry | None:
        """One ``RunningTrade`` message in ``frame[pos:end]``, or None (see :meth:`tape`)."""
        code = b""
        stamp: bytes | None = None
        price = shares = value = 0.0
        action = number = board = 0
        while pos < end:
            key = frame[pos]
            pos += 1
            if key < 8 or key >= 0x80 or pos >= end:
                return None  # field 0, a two-byte key, or a key with nothing after it
            wire_type = key & 7
            if _PRINT_TYPES.get(key >> 3, wire_type) != wire_type:
                return None  # a known field with another wire type: the decoder refuses it
            if wire_type == 1:
                if pos + 8 > end:
                    return None
                if key == 0x19:
                    price = _double(frame, pos)[0]
                elif key == 0x21:
                    shares = _double(frame, pos)[0]
                elif key == 0x59:
                    value = _double(frame, pos)[0]
                pos += 8
            elif wire_type == 0:
                result, pos = _varint(frame, pos, end)
                if result < 0:
                    return None
                if key == 0x48:
                    number = result
                elif key == 0x28:
                    action = result
                elif key == 0x50:
                    board = result
            elif wire_type == 2:
                stop = _span(frame, pos, end)
                if stop < 0:
                    return None
                pos += 1  # past the one-byte length
                if key == 0x12:
                    code = frame[pos:stop]
                elif key == 0x0A:
                    stamp = self._epoch_time(frame, pos, stop)
                    if stamp is None:
                        return None
                pos = stop
            elif wire_type == 5:
                pos += 4  # an unknown 32-bit field, skipped like the decoder does
                if pos > end:
                    return None
            else:
                return None
        if not code or stamp is None or not code.isascii():
            return None
        stream_arg = self._stream_args.get(code) or self.stream_arg(code)
        number_b = b"%d" % number
        action_b = b"%d" % action
        board_b = b"%d" % board
        price_b = b"%d" % price if price.is_integer() else repr(price).encode()
        shares_b = b"%d" % shares if shares.is_integer() else repr(shares).encode()
        value_b = b"%d" % value if value.is_integer() else repr(value).encode()
        packed = _TRADE_TEMPLATE % (
            stream_arg,
            len(code),
            code,
            len(number_b),
            number_b,
            len(price_b),
            price_b,
            len(shares_b),
            shares_b,
            len(action_b),
            action_b,
            len(board_b),
            board_b,
            len(value_b),
            value_b,
            stamp,
            len(received),
            received,
            self._source_arg,
        )
        return _new_entry(Entry, (code.decode(), TRADE, b"", received, packed))

    def _epoch_time(self, frame: bytes, pos: int, end: int) -> bytes | None:
        """A protobuf ``Timestamp`` (fields 1 seconds, 2 nanos) as WIB ISO bytes, or None."""
        seconds = nanos = 0
        while pos < end:
            key = frame[pos]
            pos += 1
            if key not in {0x08, 0x10}:
                return None
            result, pos = _varint(frame, pos, end)
            if result < 0:
                return None
            if key == 0x08:
                seconds = result
            else:
                nanos = result
        if nanos > 999_999_999 or not _EPOCH_MIN <= seconds < _EPOCH_MAX:
            return None
        template = self._epoch_templates.get(seconds)
        if template is None:
            moment = datetime.fromtimestamp(seconds, WIB).strftime("%Y-%m-%dT%H:%M:%S")
            template = moment.encode() + b".%06d+07:00"
            if len(self._epoch_templates) > 4096:
                self._epoch_templates.clear()
            self._epoch_templates[seconds] = template
        return template % (nanos // 1000)

    def _price(self, frame: bytes, pos: int, end: int, received: bytes) -> Entry | None:
        """One LivePrice message in ``frame[pos:end]``, or None (see :meth:`tape`)."""
        code = b""
        stamp: bytes | None = None
        sequence: int | None = None
        doubles = [0.0] * 11
        slots = _PRICE_SLOTS
        while pos < end:
            key = frame[pos]
            pos += 1
            if key < 8 or pos >= end:
                return None
            if key >= 0x80:
                # The one two-byte key read here is field 19's; the rest go the ordinary way.
                if key != _SEQUENCE_KEY[0] or frame[pos] != _SEQUENCE_KEY[1]:
                    return None
                pos += 1
                key = 0  # a varint, read below as the sequence
                wire_type = 0
            else:
                wire_type = key & 7
                if _PRICE_TYPES.get(key >> 3, wire_type) != wire_type:
                    return None  # a known field with another wire type: the decoder refuses it
            if wire_type == 1:
                if pos + 8 > end:
                    return None
                slot = slots.get(key)
                if slot is not None:
                    doubles[slot] = _double(frame, pos)[0]
                pos += 8
            elif wire_type == 2:
                stop = _span(frame, pos, end)
                if stop < 0:
                    return None
                pos += 1  # past the one-byte length
                if key == 0x0A:
                    code = frame[pos:stop]
                elif key == 0x5A:
                    stamp = self._canonical_time(frame[pos:stop])
                    if stamp is None:
                        return None
                pos = stop
            elif wire_type == 0:
                result, pos = _varint(frame, pos, end)
                if result < 0:
                    return None
                if key == 0:
                    sequence = result
            elif wire_type == 5:
                pos += 4  # an unknown 32-bit field, skipped like the decoder does
                if pos > end:
                    return None
            else:
                return None
        if not code or stamp is None or not code.isascii():
            return None
        texts = [b"%d" % v if v.is_integer() else repr(v).encode() for v in doubles]
        cells: list[int | bytes] = [len(code), code]
        for text in texts:
            cells += (len(text), text)
        head = _PRICE_HEAD % tuple(cells)
        if sequence is None:
            count = 38
            middle = b""
        else:
            count = 40
            sequence_b = b"%d" % sequence
            middle = _PRICE_SEQUENCE % (len(sequence_b), sequence_b)
        stream_arg = self._stream_args.get(code) or self.stream_arg(code)
        packed = b"".join(
            (
                b"*%d\r\n$4\r\nXADD\r\n" % count,
                stream_arg,
                head,
                middle,
                _PRICE_TAIL % (stamp, len(received), received, self._source_arg),
            )
        )
        levels = b"%s;%s;%s" % (texts[0], texts[4], texts[5])
        return _new_entry(Entry, (code.decode(), PRICE, levels, received, packed))

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
