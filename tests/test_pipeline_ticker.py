"""Ticker code validation."""

from __future__ import annotations

import pytest

from pipeline.ticker import TickerError, normalize, parse_list


@pytest.mark.parametrize(
    ("raw", "code"), [("bbca", "BBCA"), (" TLKM ", "TLKM"), ("LQ45", "LQ45"), ("bbca-w", "BBCA-W")]
)
def test_valid(raw: str, code: str) -> None:
    assert normalize(raw) == code


@pytest.mark.parametrize(
    "raw", ["", "2BBCA", ":BBCA", "JBBCA!", "B", "BB CA", "TOOLONGCODE", "BBCA-", "ÄBCD"]
)
def test_invalid(raw: str) -> None:
    with pytest.raises(TickerError, match="invalid ticker"):
        normalize(raw)


def test_list_dedups_and_names_all_bad() -> None:
    assert parse_list("bbca,TLKM bbca\nGOTO") == ("BBCA", "TLKM", "GOTO")
    with pytest.raises(TickerError) as info:
        parse_list("BBCA,2BBCA,x!")
    assert "'2BBCA'" in str(info.value) and "'x!'" in str(info.value)
