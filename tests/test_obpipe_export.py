"""obpipe export: Parquet copied or converted, CSV copied or rebuilt byte for byte from Parquet, tickers and days chosen, and the export folder reads like DATA_DIR."""

from __future__ import annotations

import gzip
import shutil
from datetime import datetime
from pathlib import Path

import fakeredis
import pandas as pd
import pytest

import obpipe
from bench.simday import SimDay, simulate_day
from jobs.finalize import finalize_day
from obpipe.export import export
from pipeline import cli
from pipeline.days import WIB
from pipeline.keys import Keys
from pipeline.layout import ORDERBOOK, TRADES, Layout, gap_file, ticker_file

DAY = "2026-03-02"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> SimDay:
    root = tmp_path_factory.mktemp("simday") / "data"
    return simulate_day(root, DAY, ("BBCA", "GOTO"), levels=10, book_every=8.0, trade_every=8.0)


@pytest.fixture
def sim(template: SimDay, tmp_path: Path) -> SimDay:
    root = tmp_path / "data"
    shutil.copytree(template.root, root)
    return SimDay(root, template.day, template.codes, dict(template.rows))


def finalize(sim: SimDay, keep_csv_days: int = 0) -> None:
    client = fakeredis.FakeRedis()
    client.hset(Keys("obpipe:").day_counts(DAY), mapping=sim.rows)  # type: ignore[arg-type]
    moment = datetime(2026, 3, 9, tzinfo=WIB)
    result = finalize_day(
        DAY, str(sim.root), connection=client, now=moment, keep_csv_days=keep_csv_days
    )
    assert result["ok"], result["problems"]


def test_parquet_of_a_finalized_day_is_copied(sim: SimDay, tmp_path: Path) -> None:
    finalize(sim)
    out = tmp_path / "out"
    done = export([DAY], sim.root, out)
    assert done.converted == 0 and len(done.files) == 5 and done.empty_days == []
    source, target = Layout(sim.root), Layout(out)
    for kind in (ORDERBOOK, TRADES):
        for code in sim.codes:
            assert (
                target.parquet(kind, DAY, code).read_bytes()
                == source.parquet(kind, DAY, code).read_bytes()
            )
    assert (out / gap_file(DAY)).read_bytes() == (sim.root / gap_file(DAY)).read_bytes()
    assert done.bytes == sum(p.stat().st_size for p in done.files)
    # The export folder is a data folder: the reader reads it like the original.
    pd.testing.assert_frame_equal(
        obpipe.top_of_book(DAY, "BBCA", data_dir=out),
        obpipe.top_of_book(DAY, "BBCA", data_dir=sim.root),
    )
    assert len(obpipe.gaps(DAY, data_dir=out)) == 1


def test_a_day_not_finalized_is_converted(sim: SimDay, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = export([DAY], sim.root, out, codes=["GOTO"])
    assert done.converted == 2
    assert sorted(p.name for p in done.files) == ["2026-03-02.csv", "GOTO.parquet", "GOTO.parquet"]
    assert not (sim.root / "parquet").exists(), "nothing under DATA_DIR changes"
    pd.testing.assert_frame_equal(
        obpipe.trades(DAY, "GOTO", data_dir=out), obpipe.trades(DAY, "GOTO", data_dir=sim.root)
    )


def test_csv_is_copied_or_rebuilt_byte_for_byte(sim: SimDay, tmp_path: Path) -> None:
    originals = {rel: (sim.root / rel).read_bytes() for rel in sim.rows}
    finalize(sim, keep_csv_days=1)  # the ticker CSVs are gone, only Parquet is left
    assert not (sim.root / ticker_file(ORDERBOOK, DAY, "BBCA")).exists()
    out = tmp_path / "csv"
    done = export([DAY], sim.root, out, fmt="csv")
    assert done.converted == 4
    for rel, data in originals.items():
        assert (out / rel).read_bytes() == data, rel


def test_gzipped_csv_is_unpacked(sim: SimDay, tmp_path: Path) -> None:
    originals = {}
    for rel in sim.rows:
        path = sim.root / rel
        originals[rel] = path.read_bytes()
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(originals[rel]))
        path.unlink()
    done = export([DAY], sim.root, tmp_path / "out", fmt="csv", codes=["BBCA"])
    assert done.converted == 0 and len(done.files) == 3
    for rel in (
        gap_file(DAY),
        ticker_file(ORDERBOOK, DAY, "BBCA"),
        ticker_file(TRADES, DAY, "BBCA"),
    ):
        assert (tmp_path / "out" / rel).read_bytes() == originals[rel], rel


def test_refusals(sim: SimDay) -> None:
    with pytest.raises(ValueError, match="format"):
        export([DAY], sim.root, sim.root / "x", fmt="feather")
    with pytest.raises(ValueError, match="DATA_DIR itself"):
        export([DAY], sim.root, sim.root)


def test_the_command(
    sim: SimDay,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATA_DIR", str(sim.root))
    out = tmp_path / "week"
    code = cli.main(["export", "2026-03-01..2026-03-03", "--codes", "bbca", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "exported 3 file(s)" in captured.out and "(2 converted" in captured.out
    assert "nothing for 2026-03-01" in captured.err and "nothing for 2026-03-03" in captured.err
    assert Layout(out).parquet(ORDERBOOK, DAY, "BBCA").is_file()
    assert cli.main(["export", "2026-03-07", "--out", str(out)]) == 1
    for bad in (["export", "2026-03-09..2026-03-01"], ["export", DAY, "--codes", "b$"]):
        with pytest.raises(SystemExit) as stop:
            cli.main(bad)
        assert stop.value.code == 2
