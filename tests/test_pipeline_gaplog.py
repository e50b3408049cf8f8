"""A day's gaps come from the gap files plus the untrimmed stream, once each; time coverage excludes lunch, holidays and gaps."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import fakeredis

from pipeline.calendar import TradingCalendar
from pipeline.gaplog import Gap, coverage, day_gaps, merge, read_file, read_files
from pipeline.keys import Keys
from pipeline.layout import Layout
from pipeline.records import GapRecord
from pipeline.rows import GAP_HEADER, gap_row
from stockbit.timestamps import WIB, wib_iso

DAY = "2026-03-02"  # a Monday
CALENDAR = TradingCalendar()


def at(hour: int, minute: int, second: float = 0.0, day: int = 2) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=WIB) + timedelta(seconds=second)


def record(start: datetime, end: datetime, tickers: tuple[str, ...] = ("BBCA",)) -> GapRecord:
    return GapRecord(wib_iso(start), wib_iso(end), "disconnect", tickers, "ing-a", "code 1006")


def write(data_dir: Path, day: str, *records: GapRecord) -> None:
    path = Layout(data_dir).gaps(day)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(GAP_HEADER + "".join(gap_row(r) for r in records))


def gaps_of(*records: GapRecord) -> list[Gap]:
    return merge(DAY, records, [])


def test_files_and_stream_merge_once_each_newest_first(tmp_path: Path) -> None:
    on_disk = record(at(9, 10), at(9, 11))
    both = record(at(9, 20), at(9, 21), ("BBCA", "TLKM"))
    fresh = record(at(9, 30), at(9, 31))
    overnight = record(at(23, 0, day=1), at(9, 5))
    write(tmp_path, "2026-03-01", overnight)
    write(tmp_path, DAY, on_disk, both)
    assert read_file(Layout(tmp_path).gaps("2026-03-03")) == []
    files = read_files(tmp_path, DAY)
    assert files == [overnight, on_disk, both]
    stream = [("2-0", both.fields()), ("3-0", fresh.fields()), ("4-0", {"junk": "1"})]
    gaps = merge(DAY, files, stream)
    assert [g.record for g in gaps] == [fresh, both, on_disk, overnight]
    assert [g.id for g in gaps][:2] == ["3-0", "file:2026-03-02:3"]
    # Gaps of other days are left out (the stream can still hold yesterday's).
    assert merge("2026-03-03", files, stream) == []


def test_day_gaps_reads_redis_and_disk(tmp_path: Path) -> None:
    client = fakeredis.FakeRedis()
    keys = Keys()
    copied = record(at(9, 10), at(9, 11))
    queued = record(at(9, 30), at(9, 31))
    write(tmp_path, DAY, copied)
    client.xadd(keys.gaps, dict(queued.fields()))  # type: ignore[arg-type]
    assert [g.record for g in day_gaps(client, keys, tmp_path, DAY)] == [queued, copied]
    assert [g.record for g in day_gaps(client, keys, None, DAY)] == [queued]


def test_coverage_counts_only_continuous_trading_time() -> None:
    # Monday 14:00: session 1 (3 h) and 30 min of session 2 so far = 12,600 s.
    now = at(14, 0)
    gaps = gaps_of(
        record(at(9, 0), at(9, 1)),  # 60 s
        record(at(9, 0, 30), at(9, 2)),  # overlaps the first: 60 s more
        record(at(11, 59), at(13, 31)),  # 60 s before lunch + 60 s after it
        record(at(10, 0), at(10, 1), ("TLKM",)),
        record(at(7, 0), at(8, 59)),  # before the open: no trading time
    )
    covered = coverage(gaps, ["BBCA", "TLKM", "GOTO"], CALENDAR, now)
    assert covered["BBCA"] == round(100 * (12_600 - 240) / 12_600, 2)
    assert covered["TLKM"] == round(100 * (12_600 - 60) / 12_600, 2)
    assert covered["GOTO"] == 100.0


def test_a_gap_without_tickers_concerns_them_all_and_future_parts_do_not_count() -> None:
    now = at(9, 10)
    gaps = gaps_of(record(at(9, 5), at(9, 20), ()))  # still being written up to 09:20
    assert coverage(gaps, ["BBCA", "TLKM"], CALENDAR, now) == {"BBCA": 50.0, "TLKM": 50.0}


def test_no_coverage_figure_before_the_open_or_on_a_closed_day() -> None:
    gaps = gaps_of(record(at(8, 0), at(8, 30)))
    assert coverage(gaps, ["BBCA"], CALENDAR, at(8, 50)) == {"BBCA": None}
    holiday = TradingCalendar({date(2026, 3, 2): "regional election"})
    assert coverage(gaps, ["BBCA"], holiday, at(10, 0)) == {"BBCA": None}
