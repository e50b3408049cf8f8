"""finalize_day's Parquet twins: on a simulator day they hold the CSVs' rows value for value (and rebuild them byte for byte), the manifest lists both, re-running is idempotent, and KEEP_CSV_DAYS removes only CSVs whose Parquet verifies."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import redis

import obpipe
from bench.simday import SimDay, simulate_day
from bench.stack import Stack, wait_for
from jobs import parquet
from jobs.finalize import finalize_day
from obpipe import tables
from pipeline.days import WIB
from pipeline.keys import Keys
from pipeline.layout import GAPS, ORDERBOOK, PRICES, TRADES, Layout, parquet_file
from pipeline.records import PriceRecord
from pipeline.schema import COLUMNS, HEADERS, render

DAY = "2026-03-02"
AFTER = datetime(2026, 3, 3, 1, 0, tzinfo=WIB)


@pytest.fixture(scope="module")
def sim_template(tmp_path_factory: pytest.TempPathFactory) -> SimDay:
    """One simulated trading day (2 tickers, 10 levels), written once per module."""
    root = tmp_path_factory.mktemp("simday") / "data"
    return simulate_day(root, DAY, ("BBCA", "GOTO"), levels=10, book_every=6.0, trade_every=4.0)


@pytest.fixture
def sim(sim_template: SimDay, tmp_path: Path) -> SimDay:
    """A private copy of the simulated day (tests change files)."""
    root = tmp_path / "data"
    shutil.copytree(sim_template.root, root)
    return SimDay(root, sim_template.day, sim_template.codes, dict(sim_template.rows))


@pytest.fixture
def client(sim: SimDay) -> fakeredis.FakeRedis:
    """Redis with the writers' row counts of the day (``day:<day>:rows``)."""
    redis = fakeredis.FakeRedis()
    redis.hset(Keys("obpipe:").day_counts(sim.day), mapping=sim.rows)  # type: ignore[arg-type]
    return redis


def finalize(sim: SimDay, client: fakeredis.FakeRedis, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("now", AFTER)
    return finalize_day(sim.day, str(sim.root), connection=client, **kwargs)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def without_time(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k != "generated_at"}


def test_finalize_writes_verified_parquet_twins(sim: SimDay, client: fakeredis.FakeRedis) -> None:
    result = finalize(sim, client)
    assert result["ok"], result["problems"]
    ticker_csvs = [f for f in result["files"] if not f["path"].startswith(GAPS)]
    assert len(ticker_csvs) == 4 and len(result["parquet"]) == 4
    twins = {p["csv"]: p for p in result["parquet"]}
    layout = Layout(sim.root)
    for entry in ticker_csvs:
        twin = twins[entry["path"]]
        kind, code = entry["path"].split("/")[0], entry["path"].split("_")[1][:-4]
        assert twin["path"] == parquet_file(kind, DAY, code)
        path = layout.path(twin["path"])
        # Parquet rows equal CSV rows, and the manifest lists both with their sha256.
        assert twin["rows"] == entry["rows"] == sim.rows[entry["path"]] > 0
        assert twin["sha256"] == sha256(path) and twin["bytes"] == path.stat().st_size
        assert entry["sha256"] == sha256(layout.path(entry["path"]))
        assert twin["rebuilds_csv"] and twin["ok"]
        table = tables.read_parquet(path)
        assert table.schema == tables.SCHEMAS[kind]
        assert tables.to_csv(table, kind) == layout.path(entry["path"]).read_bytes()
    meta = tables.read_parquet(layout.parquet(ORDERBOOK, DAY, "BBCA")).schema
    assert str(meta.field("timestamp").type) == "timestamp[us, tz=Asia/Jakarta]"
    assert pa.types.is_dictionary(meta.field("side").type)
    assert meta.field("price").type == pa.int64() and meta.field("seq").type == pa.int64()
    on_disk = json.loads((sim.root / "manifests" / f"{DAY}.json").read_text())
    assert on_disk == result


def test_a_month_glob_keeps_date_and_code(sim: SimDay, client: fakeredis.FakeRedis) -> None:
    finalize(sim, client)
    month = ds.dataset(sim.root / "parquet" / TRADES, format="parquet", partitioning="hive")
    table = month.to_table()
    assert set(table.column("code").to_pylist()) == {"BBCA", "GOTO"}
    assert set(map(str, table.column("date").to_pylist())) == {DAY}
    assert table.num_rows == sum(n for p, n in sim.rows.items() if p.startswith(TRADES))


def test_rerunning_is_idempotent(sim: SimDay, client: fakeredis.FakeRedis) -> None:
    first = finalize(sim, client)
    twin = sim.root / first["parquet"][0]["path"]
    written = twin.stat().st_mtime_ns
    second = finalize(sim, client, now=AFTER + timedelta(hours=2))
    assert without_time(second) == without_time(first)
    assert twin.stat().st_mtime_ns == written, "an unchanged Parquet file is kept, not rewritten"
    # A twin that no longer matches its record is rewritten, to the same bytes.
    twin.write_bytes(b"garbage")
    third = finalize(sim, client)
    assert without_time(third) == without_time(first)
    assert sha256(twin) == first["parquet"][0]["sha256"]


def test_row_count_checked_against_the_csv(sim: SimDay) -> None:
    layout = Layout(sim.root)
    relpath = f"{ORDERBOOK}/{DAY}_BBCA.csv"
    entry = {"path": relpath, "rows": sim.rows[relpath] + 1, "sha256": ""}
    facts = parquet.write_day(layout, [entry], None)[0]
    assert not facts.ok
    assert facts.problems == [f"{sim.rows[relpath]} rows, the CSV has {sim.rows[relpath] + 1}"]
    assert not facts.rebuilds_csv


def test_parquet_comes_before_gzip(sim: SimDay, client: fakeredis.FakeRedis) -> None:
    result = finalize(sim, client, compress_after_days=1)
    assert result["ok"] and result.get("compressed")
    assert not list((sim.root / ORDERBOOK).glob("*.csv"))
    assert all(p["rebuilds_csv"] for p in result["parquet"])
    again = finalize(sim, client, compress_after_days=1)  # reads the .csv.gz now
    assert again["ok"] and again["parquet"] == result["parquet"]
    assert again["gaps"] == result["gaps"] != []


def test_keep_csv_days_removes_verified_csvs_only(sim: SimDay, client: fakeredis.FakeRedis) -> None:
    before = obpipe.top_of_book(DAY, "BBCA", data_dir=sim.root)
    kept = finalize(sim, client, keep_csv_days=3)  # one day old: kept
    assert "csv_removed_at" not in kept and (sim.root / ORDERBOOK / f"{DAY}_BBCA.csv").exists()
    original = (sim.root / TRADES / f"{DAY}_GOTO.csv").read_bytes()
    later = AFTER + timedelta(days=3)
    dropped = finalize(sim, client, keep_csv_days=3, now=later)
    assert dropped["ok"], dropped["problems"]
    assert dropped["csv_removed_at"] == later.isoformat(timespec="seconds")
    assert [f["path"] for f in dropped["files"] if f.get("removed")] == [
        f for f in sim.rows if not f.startswith(GAPS)
    ]
    left = sorted(str(p.relative_to(sim.root)) for p in sim.root.rglob("*.csv"))
    assert left == [f"{GAPS}/{DAY}.csv"], "the gaps CSV stays"
    # The reader falls back on the Parquet twins; export can rebuild the exact CSV.
    pd.testing.assert_frame_equal(obpipe.top_of_book(DAY, "BBCA", data_dir=sim.root), before)
    twin = tables.read_parquet(Layout(sim.root).parquet(TRADES, DAY, "GOTO"))
    assert tables.to_csv(twin, TRADES) == original
    # Re-running on a day without its CSVs verifies the twins and keeps the figures.
    again = finalize(sim, client, keep_csv_days=3, now=later + timedelta(hours=1))
    assert without_time(again) == without_time(dropped)
    assert again["tickers"] == kept["tickers"] and again["tickers"]["BBCA"]["trades"] > 0


def test_a_changed_twin_is_a_problem_once_the_csv_is_gone(
    sim: SimDay, client: fakeredis.FakeRedis
) -> None:
    finalize(sim, client, keep_csv_days=1)
    twin = Layout(sim.root).parquet(ORDERBOOK, DAY, "GOTO")
    twin.write_bytes(b"tampered")
    result = finalize(sim, client, keep_csv_days=1)
    assert not result["ok"]
    assert result["problems"] == [
        f"{parquet_file(ORDERBOOK, DAY, 'GOTO')}: missing or changed since its CSV was removed"
    ]


def test_a_day_with_problems_keeps_its_csvs(sim: SimDay, client: fakeredis.FakeRedis) -> None:
    client.hset(Keys("obpipe:").day_counts(DAY), f"{TRADES}/{DAY}_BBCA.csv", 1)
    result = finalize(sim, client, keep_csv_days=1)
    assert not result["ok"] and "csv_removed_at" not in result
    assert len(list(sim.root.rglob("*.csv"))) == len(sim.rows)
    assert len(result["parquet"]) == 4, "twins are still written for the CSVs as they are"


def test_the_sweep_reaches_older_days_and_finishes_a_half_done_removal(
    sim: SimDay, client: fakeredis.FakeRedis
) -> None:
    finalize(sim, client)  # keep_csv_days=0: keep
    layout = Layout(sim.root)
    manifest = parquet.load_manifest(layout, DAY)
    assert manifest is not None
    saved: list[str] = []

    def save(day: str, data: dict[str, Any]) -> None:
        saved.append(day)
        layout.manifest(day).write_text(json.dumps(data))
        raise KeyboardInterrupt  # the job stops right after marking the files removed

    with pytest.raises(KeyboardInterrupt):
        parquet.drop_csvs(layout, DAY, manifest, AFTER, save)
    assert saved == [DAY] and len(list(sim.root.rglob("*.csv"))) == len(sim.rows)
    # Any later finalize (of another day) completes the removal the manifest recorded.
    removed = parquet.sweep(layout, AFTER + timedelta(days=9), 5, save)
    assert removed == {}
    assert [p.name for p in sim.root.rglob("*.csv")] == [f"{DAY}.csv"]


def test_sweep_drops_old_days_from_a_later_run(sim: SimDay, client: fakeredis.FakeRedis) -> None:
    finalize(sim, client)
    layout = Layout(sim.root)

    def save(day: str, data: dict[str, Any]) -> None:
        layout.manifest(day).write_text(json.dumps(data))

    assert parquet.sweep(layout, AFTER + timedelta(days=1), 5, save) == {}
    assert parquet.sweep(layout, AFTER + timedelta(days=6), 5, save) == {DAY: 4}
    assert parquet.sweep(layout, AFTER + timedelta(days=7), 5, save) == {}


def test_schemas_follow_the_file_headers() -> None:
    for kind in (ORDERBOOK, TRADES, GAPS, PRICES):
        if kind in COLUMNS:
            assert tables.csv_columns(kind) == COLUMNS[kind], kind
    for kind in (ORDERBOOK, TRADES, PRICES):
        assert tables.SCHEMAS[kind].names[0] == "code"


def test_cells_round_trip_through_the_types(tmp_path: Path) -> None:
    path = tmp_path / f"{DAY}_BBCA.csv"
    text = (
        "timestamp,price,lots,total_value,side,trade_number,board,received_at\n"
        f"{DAY}T09:00:00.000000+07:00,8200,44762.5,36705250000,,7,NG,{DAY}T09:00:00.100000+07:00\n"
        f"{DAY}T09:00:01.000001+07:00,8225,1,822500,SELL,8,RG,{DAY}T09:00:01.100000+07:00\n"
    )
    path.write_text(text)
    table = tables.read_csv(path, TRADES, "BBCA")
    assert table.column("side").to_pylist() == [None, "SELL"]
    assert table.column("lots").to_pylist() == [44762.5, 1.0]
    assert tables.to_csv(table, TRADES) == text.encode()
    gz = tmp_path / f"{DAY}_TLKM.csv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    assert tables.canonical(tables.read_csv(gz, TRADES, "BBCA")).equals(tables.canonical(table))
    # A whole number written as "8200.0" is read; a fraction in an int64 column is refused.
    path.write_text(text.replace(",8200,", ",8200.0,"))
    assert tables.read_csv(path, TRADES).column("price").to_pylist() == [8200, 8225]
    path.write_text(text.replace(",8200,", ",8200.5,"))
    with pytest.raises(tables.TableError, match="'price'"):
        tables.read_csv(path, TRADES)
    path.write_text("timestamp,price\n")
    with pytest.raises(tables.TableError, match="header"):
        tables.read_csv(path, TRADES)
    gaps = tmp_path / f"{DAY}.csv"
    gap_text = (
        "start,end,cause,tickers,ingestor,detail\n"
        f'{DAY}T10:00:00.000000+07:00,,disconnect,"BBCA,TLKM",ing-1,"said ""bye"", then left"\n'
    )
    gaps.write_text(gap_text)
    gap_table = tables.read_csv(gaps, GAPS)
    assert gap_table.column("end").null_count == 1
    assert tables.to_csv(gap_table, GAPS) == gap_text.encode()
    assert (
        tables.to_csv(tables.empty(TRADES), TRADES)
        == text.split("\n", maxsplit=1)[0].encode() + b"\n"
    )


@pytest.mark.e2e
@pytest.mark.redis
@pytest.mark.timeout(180)
def test_prices_rows_as_the_writer_renders_them_rebuild_byte_identical(tmp_path: Path) -> None:
    # Turnover passes 1e10 (Arrow would print 1.0123e+10) and field 19 may be absent (null).
    text = HEADERS[PRICES]
    for n, sequence in enumerate((None, 7, None), start=1):
        record = PriceRecord(
            "BBCA", 8225.0, 8175.0, 8250.0, 8150.0, 8175.0, 123_450.0 * n, 1.0123456789e10 * n,
            321.0 + n, 8200.4567, 400_000.0, 1e-05, sequence,
            f"{DAY}T10:15:3{n}.123000+07:00", f"{DAY}T10:15:3{n}.200000+07:00", "i",
        )  # fmt: skip
        fields = [part.encode() for pair in record.fields().items() for part in pair]
        text += render(fields).text
    path = tmp_path / f"{DAY}_BBCA.csv"
    path.write_text(text)
    table = tables.read_csv(path, PRICES, "BBCA")
    assert table.column("sequence").to_pylist() == [None, 7, None]
    assert table.column("total_value").to_pylist()[0] == 10_123_456_789.0
    assert tables.to_csv(table, PRICES) == text.encode()


@pytest.mark.e2e
def test_finalize_on_files_the_real_pipeline_wrote_across_midnight(tmp_path: Path) -> None:
    stack = Stack(
        tmp_path,
        tickers="BBCA,TLKM",
        sim_args=("--rate", "5", "--clock-start", "2026-03-02T23:59:54+07:00", "--levels", "20"),
    )
    stack.start()
    try:
        wait_for(stack.ready, 30, "the pipeline")
        book = stack.data_dir / ORDERBOOK
        wait_for(lambda: len(list(book.glob("2026-03-03_*.csv"))) == 2, 40, "files of 3 March")
        wait_for(stack.settled, 30, "the writer to catch up")
    finally:
        codes = stack.stop()
    assert all(code == 0 for code in codes.values()), codes
    stack.redis.start()
    try:
        client = redis.Redis.from_url(stack.redis.url)
        results = {
            day: finalize_day(
                day, str(stack.data_dir), connection=client, now=AFTER + timedelta(days=1)
            )
            for day in (DAY, "2026-03-03")
        }
        again = finalize_day(
            DAY, str(stack.data_dir), connection=client, now=AFTER + timedelta(days=1, hours=1)
        )
        client.close()
    finally:
        stack.redis.stop()
    for result in results.values():
        assert result["ok"], result["problems"]
        twins = {p["csv"]: p for p in result["parquet"]}
        for entry in result["files"]:
            if entry["path"].startswith(GAPS):
                continue
            # Rows on disk = rows the writers committed = Parquet rows.
            assert entry["rows"] == entry["expected_rows"] == twins[entry["path"]]["rows"] > 0
            assert twins[entry["path"]]["rebuilds_csv"]
    assert without_time(again) == without_time(results[DAY])
    tob = obpipe.top_of_book("2026-03-02..2026-03-03", "BBCA", data_dir=stack.data_dir)
    assert set(tob.timestamp.dt.date.astype(str)) == {DAY, "2026-03-03"}
    both = tob.dropna(subset=["bid", "ask"])
    assert len(both) > 10 and (both.spread > 0).all()
