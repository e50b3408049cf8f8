"""Codec cost: µs per decoded 60-level order-book frame (protobuf layer, then body split).

Target from the foundation issue: ≤ 15 µs per frame for the protobuf layer. The body is split
lazily by whoever needs rows, so it is measured separately.
"""

from __future__ import annotations

import random
import timeit
from collections.abc import Callable

from bench.report import spread
from stockbit import book, wrapper
from stockbit.messages import OrderBook
from stockbit.timestamps import parse_iso

REPEATS = 7
NUMBER = 20_000


def sample_frame(levels: int = 60, seed: int = 1) -> bytes:
    """A realistic 60-level BID snapshot (about 1.3 KB)."""
    rng = random.Random(seed)
    price = 8200
    ladder = []
    for _ in range(levels):
        orders = rng.randint(1, 400)
        ladder.append(book.Level(price, orders, orders * rng.randint(1, 300) * 100))
        price -= 25
    body = book.format_body("BBCA", "BID", ladder)
    frame = OrderBook("BBCA", body, 1234567, 42, parse_iso("2026-03-02T10:15:30.123456+07:00"), 1)
    return wrapper.encode_orderbook(
        frame, "2026-03-02T10:15:30.123456789+07:00", "2026-03-02T10:15:30.118734201+07:00"
    )


def _per_call_us(statement: Callable[[], object]) -> list[float]:
    times = timeit.repeat(statement, number=NUMBER, repeat=REPEATS)
    return [t / NUMBER * 1e6 for t in times]


def run() -> str:
    """Measure and return the Markdown section."""
    frame = sample_frame()
    decoded = wrapper.decode(frame)
    assert isinstance(decoded, OrderBook)
    body = decoded.body
    decode = _per_call_us(lambda: wrapper.decode(frame))
    header = _per_call_us(lambda: book.split_header(body))
    levels = _per_call_us(lambda: book.parse_body(body))
    return "\n".join(
        [
            "## Codec",
            "",
            f"One 60-level order-book frame of {len(frame):,} bytes, timeit, {NUMBER:,} calls per "
            f"run, {REPEATS} runs.",
            "",
            "| step | µs per frame |",
            "|---|---|",
            f"| `wrapper.decode` (protobuf layer + both timestamps) | {spread(decode, digits=2)} |",
            f"| `book.split_header` (code, side, level text) | {spread(header, digits=2)} |",
            f"| `book.parse_body` (60 `Level` objects; done lazily by consumers) "
            f"| {spread(levels, digits=2)} |",
            "",
            "Target: ≤ 15 µs for the protobuf layer.",
        ]
    )
