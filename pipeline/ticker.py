"""Ticker codes: validation and normalisation (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterable

_CODE = re.compile(r"[A-Z][A-Z0-9]{1,5}(?:-[A-Z0-9]{1,3})?\Z")


class TickerError(ValueError):
    """A ticker code that cannot be an IDX code."""


def normalize(code: str) -> str:
    """Upper-case and check one code (``bbca`` → ``BBCA``; ``BBCA-W`` allowed).

    IDX stock codes are four letters; warrants and rights add a suffix; index codes such as
    ``LQ45`` contain digits. Anything else (spaces, punctuation, protobuf tag bytes mistaken
    for letters as in ``2BBCA``) is refused with a message naming the bad code.
    """
    cleaned = code.strip().upper()
    if not _CODE.match(cleaned):
        raise TickerError(
            f"invalid ticker {code.strip()[:20]!r}: expected 2-6 letters/digits starting with a "
            "letter, optionally with a -suffix (e.g. BBCA, LQ45, BBCA-W)"
        )
    return cleaned


def parse_list(text: str) -> tuple[str, ...]:
    """Parse a comma/space-separated list, de-duplicated, order kept; raise on any bad code."""
    return normalize_all(part for part in re.split(r"[,\s]+", text) if part)


def normalize_all(codes: Iterable[str]) -> tuple[str, ...]:
    """Normalise many codes; one :class:`TickerError` names every bad one."""
    good: dict[str, None] = {}
    bad: list[str] = []
    for code in codes:
        try:
            good[normalize(code)] = None
        except TickerError:
            bad.append(code.strip()[:20])
    if bad:
        raise TickerError(f"invalid ticker(s): {', '.join(repr(b) for b in bad)}")
    return tuple(good)
