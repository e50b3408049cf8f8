"""Every path under DATA_DIR comes from one place, and day-file paths come apart into kind, day and ticker."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.days import DayError
from pipeline.layout import (
    DayFile,
    Layout,
    book_file,
    code_of,
    day_of_file,
    gap_file,
    kind_of,
    parse_file,
    price_file,
    trade_file,
)

ROOT = Path("/srv/data")


def test_relative_day_files() -> None:
    assert book_file("2026-03-02", "BBCA") == "orderbook/2026-03-02_BBCA.csv"
    assert trade_file("2026-03-02", "BBCA") == "trades/2026-03-02_BBCA.csv"
    assert price_file("2026-03-02", "BBCA") == "prices/2026-03-02_BBCA.csv"
    assert gap_file("2026-03-02") == "gaps/2026-03-02.csv"
    assert kind_of("trades/2026-03-02_BBCA.csv") == "trades"
    assert day_of_file("orderbook/2026-03-02_BBCA-W.csv") == "2026-03-02"
    assert code_of(Path("x/2026-03-02_BBCA-W.csv.gz")) == "BBCA-W"


def test_folders_under_the_root() -> None:
    layout = Layout(ROOT)
    assert layout.gaps("2026-03-02") == ROOT / "gaps/2026-03-02.csv"
    assert layout.manifest("2026-03-02") == ROOT / "manifests/2026-03-02.json"
    assert layout.raw_dir("2026-03-02") == ROOT / "raw/2026-03-02"
    assert layout.replay_dir("2026-03-02") == ROOT / "replay/2026-03-02"
    assert layout.lock("p3") == ROOT / ".locks/p3.lock"
    assert (
        layout.parquet("orderbook", "2026-03-02", "BBCA")
        == ROOT / "parquet/orderbook/date=2026-03-02/BBCA.parquet"
    )


@pytest.mark.parametrize("day", ["20260302", "2026-W10-1", "../etc", "2026-03-02/../x"])
def test_no_path_from_a_bad_day(day: str) -> None:
    layout = Layout(ROOT)
    for build in (layout.manifest, layout.raw_dir, layout.replay_dir):
        with pytest.raises(DayError):
            build(day)


@pytest.mark.parametrize(
    ("relpath", "expected"),
    [
        ("orderbook/2026-03-02_BBCA.csv", DayFile("orderbook", "2026-03-02", "BBCA")),
        ("trades/2026-03-02_BBCA.csv.gz", DayFile("trades", "2026-03-02", "BBCA")),
        ("gaps/2026-03-02.csv", DayFile("gaps", "2026-03-02", None)),
        ("orderbook/20260302_BBCA.csv", None),
        ("orderbook/2026-03-02.csv", None),
        ("other/2026-03-02_BBCA.csv", None),
        ("orderbook/sub/2026-03-02_BBCA.csv", None),
        ("orderbook/2026-03-02_BBCA.json", None),
    ],
)
def test_parse_file(relpath: str, expected: DayFile | None) -> None:
    if expected is None:
        with pytest.raises(ValueError):
            parse_file(relpath)
    else:
        assert parse_file(relpath) == expected


def test_day_files_and_manifest_days(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    for rel in (
        "orderbook/2026-03-02_BBCA.csv",
        "orderbook/2026-03-02_TLKM.csv.gz",
        "orderbook/2026-03-03_BBCA.csv",
        "trades/2026-03-02_BBCA.csv",
        "gaps/2026-03-02.csv",
        "gaps/2026-03-02.csv.tmp",
        "manifests/2026-03-02.json",
        "manifests/2026-03-01.json",
        "manifests/notes.json",
    ):
        layout.path(rel).parent.mkdir(parents=True, exist_ok=True)
        layout.path(rel).write_text("x")
    (tmp_path / "manifests/2026-02-28.json").mkdir()
    found = [(kind, layout.relative(kind, path)) for kind, path in layout.day_files("2026-03-02")]
    assert found == [
        ("orderbook", "orderbook/2026-03-02_BBCA.csv"),
        ("orderbook", "orderbook/2026-03-02_TLKM.csv"),
        ("trades", "trades/2026-03-02_BBCA.csv"),
        ("gaps", "gaps/2026-03-02.csv"),
    ]
    assert layout.manifest_days() == ["2026-03-02", "2026-03-01"]
