"""finalize_day through a real RQ SimpleWorker (burst) against a real redis-server."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import redis
from rq import Queue, SimpleWorker

from jobs.finalize import DayNotFinishedError, check_finished, finalize_day
from pipeline.days import DayError
from pipeline.keys import Keys
from stockbit.timestamps import WIB

DAY = "2026-03-02"
BOOK = (
    "timestamp,price,lots,total_value,side,level,orders,seq,received_at\n"
    "2026-03-02T09:00:00.100000+07:00,8200,10,8200000,BID,1,2,1,2026-03-02T09:00:00.150000+07:00\n"
    "2026-03-02T09:00:00.100000+07:00,8175,5,4087500,BID,2,1,1,2026-03-02T09:00:00.150000+07:00\n"
    "2026-03-02T09:00:00.200000+07:00,8225,3,2467500,OFFER,1,1,1,2026-03-02T09:00:00.250000+07:00\n"
    "2026-03-02T09:00:01.100000+07:00,8200,12,9840000,BID,1,3,2,2026-03-02T09:00:01.150000+07:00\n"
)
TRADES = (
    "timestamp,price,lots,total_value,side,trade_number,board,received_at\n"
    "2026-03-02T09:00:00.500000+07:00,8200,10,8200000,BUY,101,RG,2026-03-02T09:00:00.550000+07:00\n"
    "2026-03-02T09:00:02.500000+07:00,8225,30,24675000,SELL,102,RG,2026-03-02T09:00:02.550000+07:00\n"
)
LATER = datetime(2026, 3, 5, 12, tzinfo=WIB)


def _files(data_dir: Path) -> None:
    (data_dir / "orderbook").mkdir()
    (data_dir / "trades").mkdir()
    (data_dir / "gaps").mkdir()
    (data_dir / "orderbook" / f"{DAY}_BBCA.csv").write_text(BOOK)
    (data_dir / "trades" / f"{DAY}_BBCA.csv").write_text(TRADES)
    (data_dir / "gaps" / f"{DAY}.csv").write_text(
        "start,end,cause,tickers,ingestor,detail\n"
        "2026-03-02T10:00:00.000000+07:00,2026-03-02T10:00:02.000000+07:00,disconnect,BBCA,ing-1,"
        "connection closed\n"
    )


def _counts(client: redis.Redis, book_rows: int = 4) -> None:
    client.hset(
        Keys().day_counts(DAY),
        mapping={f"orderbook/{DAY}_BBCA.csv": book_rows, f"trades/{DAY}_BBCA.csv": 2},
    )


def _run(client: redis.Redis, data_dir: Path, **kwargs: object) -> dict[str, object]:
    queue = Queue("obpipe", connection=client)
    job = queue.enqueue(finalize_day, DAY, str(data_dir), now=LATER, **kwargs)
    SimpleWorker([queue], connection=client).work(burst=True)
    job.refresh()  # type: ignore[no-untyped-call]
    assert job.is_finished, job.latest_result()
    result = job.return_value()
    assert isinstance(result, dict)
    return result


@pytest.mark.redis
def test_manifest_figures_match_the_files(redis_url: str, data_dir: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    _files(data_dir)
    _counts(client)
    result = _run(client, data_dir)
    saved = json.loads((data_dir / "manifests" / f"{DAY}.json").read_text())
    assert saved["ok"] and result["ok"] and saved["problems"] == []
    files = {f["path"]: f for f in saved["files"]}
    book = files[f"orderbook/{DAY}_BBCA.csv"]
    assert book["rows"] == 4 and book["expected_rows"] == 4
    assert book["bytes"] == len(BOOK.encode())
    assert book["first_timestamp"] == "2026-03-02T09:00:00.100000+07:00"
    assert book["last_timestamp"] == "2026-03-02T09:00:01.100000+07:00"
    bbca = saved["tickers"]["BBCA"]
    assert bbca["snapshots"] == 3 and bbca["trades"] == 2
    assert bbca["shares"] == 4000 and bbca["lots"] == 40
    assert bbca["vwap"] == round((8200 * 1000 + 8225 * 3000) / 4000, 4)
    assert (bbca["high"], bbca["low"]) == (8225, 8200)
    assert saved["gaps"][0]["cause"] == "disconnect"

    again = _run(client, data_dir)
    assert {k: v for k, v in again.items() if k != "generated_at"} == {
        k: v for k, v in result.items() if k != "generated_at"
    }


@pytest.mark.redis
def test_corrupt_file_and_count_mismatch_are_reported(redis_url: str, data_dir: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    _files(data_dir)
    _counts(client, book_rows=5)
    with (data_dir / "trades" / f"{DAY}_BBCA.csv").open("a") as handle:
        handle.write("2026-03-02T09:00:03.5+07:00,8200,1")
    result = _run(client, data_dir)
    assert result["ok"] is False
    problems = "\n".join(result["problems"])  # type: ignore[arg-type]
    assert "4 rows on disk, the writers committed 5" in problems
    assert "incomplete" in problems and "3 fields" in problems


@pytest.mark.redis
def test_compression_keeps_the_figures(redis_url: str, data_dir: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    _files(data_dir)
    _counts(client)
    plain = _run(client, data_dir)
    packed = _run(client, data_dir, compress_after_days=1)
    assert packed["compressed"] is True
    assert not (data_dir / "orderbook" / f"{DAY}_BBCA.csv").exists()
    assert (data_dir / "orderbook" / f"{DAY}_BBCA.csv.gz").exists()
    assert [f["sha256"] for f in plain["files"]] == [f["sha256"] for f in packed["files"]]  # type: ignore[attr-defined]
    assert packed["tickers"] == plain["tickers"]


def test_today_is_never_finalized() -> None:
    with pytest.raises(DayNotFinishedError):
        check_finished(DAY, datetime(2026, 3, 2, 23, 59, tzinfo=WIB), 30)
    with pytest.raises(DayNotFinishedError):
        check_finished(DAY, datetime(2026, 3, 3, 0, 10, tzinfo=WIB), 30)
    assert str(check_finished(DAY, datetime(2026, 3, 3, 0, 31, tzinfo=WIB), 30)) == DAY
    with pytest.raises(DayError, match="not a real date"):
        check_finished("2026-02-30", LATER, 0)
    for other_form in ("20260302", "2026-W10-1", "2026-03-02T00:00"):
        with pytest.raises(DayError, match="expected YYYY-MM-DD"):
            check_finished(other_form, LATER, 0)
