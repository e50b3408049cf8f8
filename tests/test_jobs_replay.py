"""``obpipe replay``: a day rebuilt from its raw frames through the ingestor's codec and the
writer's file schema — equal to the writer's files end to end (writer kills, reconnects), with
every hole in the raw coverage reported instead of papered over."""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bench.stack import Stack, wait_for
from ingestor.archive import Loss, Pending, RawWriter
from ingestor.entries import EntryPacker
from jobs.replay import Replay, ReplayError, entry_fields, replay_day
from pipeline import cli, rawfile
from pipeline.keys import Keys
from pipeline.layout import REPLAY_REPORT, Layout
from pipeline.records import BookRecord, TradeRecord, parse
from pipeline.schema import render
from simulator.frames import encode_book, encode_live, encode_tape
from simulator.market import Market
from stockbit.timestamps import WIB

DAY = "2026-03-02"  # a Monday: sessions 09:00–12:00 and 13:30–15:50 WIB
LATER = datetime(2026, 3, 4, 12, tzinfo=WIB)
STAMPS = rawfile.Stamps()


class ManualClock:
    """The simulator market's clock, moved by hand."""

    def __init__(self) -> None:
        self.ns = 0

    def now_ns(self) -> int:
        return self.ns


def feed(start: datetime, end: datetime, every_s: float, *, seed: int = 1) -> Pending:
    """Frames as the simulator sends them (books, trades, LivePrice) for two tickers, received
    ``every_s`` apart (2 ms after their exchange time), with their receive times."""
    clock = ManualClock()
    market = Market(clock, random.Random(seed))
    out: Pending = []
    moment = start
    turn = 0
    while moment < end:
        clock.ns = int(moment.timestamp() * 1e9)
        code = ("BBCA", "TLKM")[turn % 2]
        if turn % 3 == 2:
            frame = encode_tape(market.trades(code))
            out.append((frame, STAMPS.text(int(moment.timestamp() * 1e6) + 2000)))
            frame = encode_live(market.live(code))
        else:
            frame = encode_book(market.book(code, ("BID", "OFFER")[turn // 2 % 2]))
        out.append((frame, STAMPS.text(int(moment.timestamp() * 1e6) + 2000)))
        turn += 1
        moment += timedelta(seconds=every_s)
    return out


def archive(root: Path, ingestor: str, *batches: Pending, close: bool = True) -> RawWriter:
    raw = RawWriter(Layout(root), ingestor, lambda: int(LATER.timestamp() * 1e6))
    for batch in batches:
        raw.write(batch)
    if close:
        raw.close()
    return raw


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, 2, hour, minute, tzinfo=WIB)


def rows(path: Path) -> list[str]:
    return path.read_text().splitlines()


# ---- the codec path -------------------------------------------------------------------------


def test_entry_fields_are_the_fields_the_writer_reads_back() -> None:
    packer = EntryPacker(Keys(), "ing-1", 1_000_000)
    received = b"2026-03-02T10:00:00.123456+07:00"
    ((book, _), *_) = feed(at(10), at(10, 1), 1.0)
    assert isinstance(book, bytes)
    entry = packer.book(book, received)  # the ingestor's fast path
    assert entry is not None
    fields = entry_fields(entry.command)
    record = parse(
        dict(zip(map(bytes.decode, fields[::2]), map(bytes.decode, fields[1::2]), strict=True))
    )
    assert isinstance(record, BookRecord) and record.received == received.decode()
    assert render(fields).path == f"orderbook/{DAY}_{record.code}.csv"
    trade = TradeRecord(
        "BBCA", 7, 8200.0, 500.0, 1, 1, 4.1e6, f"{DAY}T10:00:00.000000+07:00", "", "i"
    )
    fields = entry_fields(packer.record(trade, received).command)  # the general path
    back = parse(
        dict(zip(map(bytes.decode, fields[::2]), map(bytes.decode, fields[1::2]), strict=True))
    )
    assert back == replace(trade, received=received.decode())
    with pytest.raises(ValueError):
        entry_fields(b"*1\r\n$4\r\nPING\r\n")


# ---- holes, losses, torn files --------------------------------------------------------------


def test_a_missing_hour_is_reported_not_pretended(tmp_path: Path) -> None:
    root = tmp_path / "data"
    # Frames from 08:45 to 16:15 every 5 s, except 10:00–11:00 (files lost) and 13:00–13:10
    # (a recorded disconnect, during the lunch break: no rows are missing there anyway).
    day = feed(at(8, 45), at(16, 15), 5.0)
    kept = [f for f in day if not (b"T10:" in f[1][:14] or b"T13:0" in f[1][:15])]
    assert len(kept) < len(day)
    archive(root, "ing-1", kept)
    (root / "gaps").mkdir(parents=True)
    (root / "gaps" / f"{DAY}.csv").write_text(
        "start,end,cause,tickers,ingestor,detail\n"
        f"{DAY}T12:59:58.000000+07:00,{DAY}T13:10:01.000000+07:00,disconnect,"
        '"BBCA,TLKM",ing-1,closed\n'
    )
    report = replay_day(DAY, root, now=LATER)
    assert report["ok"] is False
    holes = [(h["start"][11:16], h["end"][11:16], h["cause"]) for h in report["holes"]]
    assert holes == [("09:59", "11:00", "unexplained"), ("12:59", "13:10", "feed_gap")]
    (warning,) = [w for w in report["warnings"] if "hole" in w]
    assert "09:59:5" in warning and "11:00:00" in warning and "cannot be rebuilt" in warning
    saved = json.loads((root / "replay" / DAY / REPLAY_REPORT).read_text())
    assert saved["holes"] == report["holes"] and saved["warnings"] == report["warnings"]
    # The rows it could rebuild are there, and the books of 10:xx are not.
    book = rows(root / "replay" / DAY / "orderbook" / f"{DAY}_BBCA.csv")
    assert book[0].startswith("timestamp,") and not any(r.startswith(f"{DAY}T10:") for r in book)


def test_trading_hours_before_the_first_and_after_the_last_frame_are_holes(tmp_path: Path) -> None:
    root = tmp_path / "data"
    archive(root, "ing-1", feed(at(9, 30), at(15, 0), 10.0))
    report = replay_day(DAY, root, now=LATER)
    assert [(h["start"][11:16], h["end"][11:16], h["where"]) for h in report["holes"]] == [
        ("08:45", "09:30", "before_first_frame"),
        ("14:59", "16:15", "after_last_frame"),  # the last frame: 14:59:50
    ]
    # Replayed mid-day, the hours still to come are no hole yet.
    report = replay_day(DAY, root, now=at(15, 0) + timedelta(seconds=20))
    assert [h["where"] for h in report["holes"]] == ["before_first_frame"]


def test_archive_losses_and_torn_files_are_warned_about(tmp_path: Path) -> None:
    root = tmp_path / "data"
    day = feed(at(8, 45), at(16, 15), 10.0)
    raw = archive(root, "ing-1", day[:1000], close=False)
    loss = Loss()
    loss.add(12, 9000, STAMPS.micros(day[1000][1]), STAMPS.micros(day[1011][1]), "disk_floor")
    raw.write(day[1012:2000], loss)
    raw.flush()
    raw.abandon()  # killed: no END record, no epilogue
    (path,) = [p for _, _, p in Layout(root).raw_files(DAY)]
    with path.open("ab") as handle:
        handle.write(b"\x00" * 7)  # and a torn write after the last flush
    archive(root, "ing-1", day[2000:])
    report = replay_day(DAY, root, now=LATER)
    assert report["archive_losses"][0]["frames"] == 12
    assert report["archive_losses"][0]["reason"] == "disk_floor"
    text = "\n".join(report["warnings"])
    assert "lost 12 frame(s)" in text and "ing-1.0.zst" in text
    assert [f["complete"] for f in report["raw_files"]] == [False, True]
    assert report["frames"] == len(day) - 12


def test_replicas_are_deduplicated_and_interleaved_by_receive_time(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    day = feed(at(9), at(9, 30), 1.0)
    archive(one, "ing-1", day)
    archive(two, "ing-1", day)
    # The same frames through a second ingestor, received 1 ms later: every one a duplicate.
    late = [(f, STAMPS.text(STAMPS.micros(r) + 1000)) for f, r in day]
    archive(two, "ing-2", late)
    single = replay_day(DAY, one, now=LATER)
    double = replay_day(DAY, two, now=LATER)
    assert double["duplicates_dropped"] == single["duplicates_dropped"] + double["entries"] // 2
    for a, b in zip(single["files"], double["files"], strict=True):
        assert (a["path"], a["sha256"], a["rows"]) == (b["path"], b["sha256"], b["rows"])


def test_files_are_compared_with_their_originals(tmp_path: Path) -> None:
    root = tmp_path / "data"
    archive(root, "ing-1", feed(at(9), at(9, 5), 1.0))
    first = replay_day(DAY, root, now=LATER)
    assert {f["original"] for f in first["files"]} == {"missing"}
    assert first["only_in_originals"] == []
    rebuilt = root / "replay" / DAY
    for f in first["files"]:
        (root / f["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(rebuilt / f["path"], root / f["path"])
    book = root / "orderbook" / f"{DAY}_BBCA.csv"
    book.write_text(book.read_text().replace(",BID,1,", ",BID,01,", 1))  # a "decoder bug"
    (root / "trades" / f"{DAY}_GOTO.csv").write_text("timestamp\n")
    again = replay_day(DAY, root, now=LATER)
    assert again["differ"] == [f"orderbook/{DAY}_BBCA.csv"]
    assert again["equal"] == len(again["files"]) - 1
    assert again["only_in_originals"] == [f"trades/{DAY}_GOTO.csv"]


def test_replay_refuses_data_dir_itself_and_days_without_raw_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    with pytest.raises(ReplayError, match="no raw files"):
        replay_day(DAY, root)
    archive(root, "ing-1", feed(at(9), at(9, 1), 1.0))
    with pytest.raises(ReplayError, match="DATA_DIR itself"):
        Replay(DAY, root, root).run()
    monkeypatch.setenv("DATA_DIR", str(root))
    assert cli.main(["replay", "2026-03-03"]) == 1
    assert "no raw files" in capsys.readouterr().err
    assert cli.main(["replay", DAY, "--out", str(tmp_path / "elsewhere")]) == 3  # holes
    out, err = capsys.readouterr()
    assert "into 6 file(s)" in out and "WARNING: raw coverage hole" in err
    assert (tmp_path / "elsewhere" / REPLAY_REPORT).is_file()
    assert not (root / "orderbook").exists()


# ---- end to end -----------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.redis
@pytest.mark.timeout(300)
def test_replay_equals_the_writers_files_across_writer_kills_and_reconnects(
    tmp_path: Path,
) -> None:
    stack = Stack(
        tmp_path,
        tickers="BBCA,TLKM,GOTO",
        writers=2,
        sim_args=("--rate", "4", "--drop-every", "4"),
        env={"RAW_MIN_FREE_MB": "100"},
    )
    stack.start()
    try:
        wait_for(stack.ready, 30, "the pipeline")

        def reconnects() -> int:
            return sum(s.reconnects for s in stack.live()["ingestors"])

        wait_for(lambda: reconnects() >= 2, 40, "2 reconnects")
        stack.kill("writer-1")  # SIGKILL mid-commit, restarted under the same id
        time.sleep(1.0)
        stack.restart("writer-1")
        wait_for(lambda: reconnects() >= 4, 40, "4 reconnects")
        stack.kill("writer-2")
        stack.restart("writer-2")
        wait_for(stack.settled, 30, "the writers to catch up")
        # The feed stops first; then every entry in Redis is committed before anyone stops,
        # so the writers' files hold every frame the ingestor archived.
        assert stack.sim is not None and stack.client is not None
        stack.sim.stop()
        client = stack.client
        wait_for(
            lambda: sum(client.xlen(f"obpipe:stream:{p}") for p in range(16)) == 0,
            30,
            "every entry committed",
        )
    finally:
        codes = stack.stop()
    assert all(code == 0 for code in codes.values()), codes
    layout = Layout(stack.data_dir)
    days = layout.raw_days()
    assert days
    compared = 0
    for day in days:
        report = replay_day(day, stack.data_dir)
        assert report["frames"] > 500 and report["duplicates_dropped"] > 0  # the backfills
        assert report["differ"] == [] and report["only_in_originals"] == []
        assert all(f["original"] == "equal" for f in report["files"]), report["files"]
        kinds = {f["path"].split("/")[0] for f in report["files"]}
        assert kinds == {"orderbook", "trades", "prices"}
        compared += len(report["files"])
        # The archive heard the feed all along: reconnects are quick, pongs keep coming.
        assert [h for h in report["holes"] if h["where"] == "silence"] == []
        assert all(f["complete"] for f in report["raw_files"])
    assert compared >= 9
