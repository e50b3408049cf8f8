"""Property tests: random and mutated bytes only ever raise ProtocolError (or decode)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockbit import ProtocolError, book, request, wrapper
from stockbit.timestamps import parse_iso
from stockbit.token import read_claims
from tests.test_stockbit_request import CREDS, KEY_FIELD, TOKEN_FIELD
from tests.test_stockbit_wrapper import BOOK_FRAME, ERROR_FRAME, TRADE_FRAME

T = TypeVar("T")

SEEDS = [BOOK_FRAME, TRADE_FRAME, ERROR_FRAME, wrapper.PONG]
REQUEST_SEEDS = [CREDS + KEY_FIELD + TOKEN_FIELD, request.PING]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed frame with a few bytes flipped, inserted, deleted, or cut short."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data.insert(pos, draw(st.integers(0, 255)))
        elif op == "delete" and data:
            del data[pos]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def _only_protocol_errors(decode: Callable[[T], object], data: T) -> None:
    with contextlib.suppress(ProtocolError):
        decode(data)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=300), mutated(SEEDS)))
def test_server_frames_never_leak_other_errors(data: bytes) -> None:
    _only_protocol_errors(wrapper.decode, data)


@settings(max_examples=400)
@given(st.one_of(st.binary(max_size=300), mutated(REQUEST_SEEDS)))
def test_client_frames_never_leak_other_errors(data: bytes) -> None:
    _only_protocol_errors(request.decode, data)


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_book_body_and_time_text(text: str) -> None:
    _only_protocol_errors(book.parse_body, "#O|BBCA|BID|" + text)
    _only_protocol_errors(book.parse_body, text)
    _only_protocol_errors(parse_iso, text)
    _only_protocol_errors(read_claims, text)


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.integers(1, 10**6), st.integers(0, 10**5), st.integers(0, 10**10)),
        max_size=70,
    ),
    st.sampled_from(book.SIDES),
)
def test_body_round_trip(levels: list[tuple[int, int, int]], side: str) -> None:
    parsed = [book.Level(*lv) for lv in levels]
    body = book.format_body("TLKM", side, parsed)
    assert book.parse_body(body) == book.Body("TLKM", side, tuple(parsed))
