"""The raw archive: format round trip, torn tails, day rollover, prune, the free-space floor,
write errors, and a hot path that never waits (a full queue is counted, then written down)."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime, timedelta
from pathlib import Path

import fakeredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestor import archive as archive_module
from ingestor.archive import DISK_FLOOR, ERROR, OK, Archive, Pending, RawWriter
from ingestor.entries import ReceivedClock
from pipeline import rawfile
from pipeline.alerts import CRITICAL, WARNING
from pipeline.conditions import decode
from pipeline.keys import Keys
from pipeline.layout import Layout, parse_raw_name, raw_file
from stockbit.timestamps import WIB

DAY = "2026-03-02"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=WIB)
STAMPS = rawfile.Stamps()


def at(moment: datetime) -> bytes:
    """A receive time as the ingestor's clock writes it."""
    return STAMPS.text(int(moment.timestamp() * 1_000_000))


def frames(count: int, start: datetime = T0, step_ms: int = 7) -> Pending:
    rng = random.Random(count)
    out: Pending = []
    for i in range(count):
        moment = start + timedelta(milliseconds=i * step_ms, microseconds=i)
        out.append((rng.randbytes(rng.randrange(1, 2000)), at(moment)))
    return out


def read_all(path: Path) -> tuple[list[rawfile.Record], rawfile.RawFile]:
    info = rawfile.RawFile(path)
    return list(rawfile.read(path, info)), info


def writer(root: Path, ingestor: str = "ing-1") -> RawWriter:
    return RawWriter(Layout(root), ingestor, lambda: int(T0.timestamp() * 1_000_000))


# ---- the format -----------------------------------------------------------------------------


def test_round_trip_keeps_every_frame_its_type_and_its_receive_time(tmp_path: Path) -> None:
    sent = [*frames(500), ("a text frame: ünïcode", at(T0 + timedelta(seconds=9))), (b"", at(T0))]
    raw = writer(tmp_path)
    raw.write(sent[:200])
    raw.flush()
    raw.write(sent[200:])
    raw.close()
    (path,) = [p for _, _, p in Layout(tmp_path).raw_files(DAY)]
    assert path.name == "ing-1.0.zst" and parse_raw_name(path.name) == ("ing-1", 0)
    records, info = read_all(path)
    assert info.complete and info.problem is None and info.frames == len(sent)
    assert info.header == {
        "format": "obpipe-raw", "version": 1, "ingestor": "ing-1", "n": 0, "day": DAY,
    }  # fmt: skip
    assert [r.kind for r in records[:1] + records[-1:]] == [rawfile.HEADER, rawfile.END]
    got = [(r.frame, STAMPS.text(r.time_us)) for r in records if r.kind in rawfile.FRAMES]
    assert got == sent
    assert records[-1].json() == {"frames": len(sent)}
    assert raw.frames == len(sent) and raw.bytes == path.stat().st_size


@given(st.integers(min_value=0, max_value=4_102_444_800_000_000))
def test_receive_time_text_and_micros_are_inverse(micros: int) -> None:
    text = STAMPS.text(micros)
    assert len(text) == 32 and text.endswith(b"+07:00")
    assert STAMPS.micros(text) == micros


def test_receive_time_text_is_the_ingestors_own(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ReceivedClock()
    for nanos in (1_772_421_330_123_456_789, 1_772_470_799_999_999_999, 1_000_000_000):
        monkeypatch.setattr(time, "time_ns", lambda nanos=nanos: nanos)
        text = clock.now()
        assert STAMPS.text(STAMPS.micros(text)) == text == STAMPS.text(nanos // 1000)


def test_a_torn_tail_is_skipped_and_reported(tmp_path: Path) -> None:
    sent = frames(3000)
    raw = writer(tmp_path)
    raw.write(sent[:1000])
    raw.flush()  # the file is readable up to here, whatever happens next
    flushed = raw.path.stat().st_size if raw.path else 0
    raw.write(sent[1000:])
    raw.close()
    data = Layout(tmp_path).raw_files(DAY)[0][2].read_bytes()
    for cut in (flushed, (flushed + len(data)) // 2, len(data) - 1):
        torn = tmp_path / f"cut-{cut}.zst"
        torn.write_bytes(data[:cut])
        records, info = read_all(torn)
        got = [r.payload for r in records if r.kind in rawfile.FRAMES]
        assert len(got) >= 1000 and got == [f for f, _ in sent[: len(got)]]
        assert not info.complete and info.problem is not None
    corrupt = tmp_path / "corrupt.zst"
    corrupt.write_bytes(data[:flushed] + b"\xff" * 64 + data[flushed + 64 :])
    records, info = read_all(corrupt)  # never raises: reports
    assert not info.complete and info.problem
    assert [r.payload for r in records if r.kind in rawfile.FRAMES] == [
        f for f, _ in sent[: info.frames]
    ]
    junk = tmp_path / "junk.zst"
    junk.write_bytes(b"not zstd at all")
    records, info = read_all(junk)
    assert records == [] and info.error


def test_day_rollover_at_midnight_wib_starts_the_next_days_file(tmp_path: Path) -> None:
    before = datetime(2026, 3, 2, 23, 59, 59, 990_000, tzinfo=WIB)
    sent = frames(10, start=before, step_ms=3)  # 23:59:59.990 → 00:00:00.017 (next day)
    raw = writer(tmp_path)
    raw.write(sent)
    raw.close()
    layout = Layout(tmp_path)
    (first,) = layout.raw_files(DAY)
    (second,) = layout.raw_files("2026-03-03")
    assert first[:2] == second[:2] == ("ing-1", 0)
    one, _ = read_all(first[2])
    two, info = read_all(second[2])
    assert info.complete and info.header["day"] == "2026-03-03"
    got = [r for r in one + two if r.kind in rawfile.FRAMES]
    assert [(r.payload, STAMPS.text(r.time_us)) for r in got] == sent
    assert all(STAMPS.text(r.time_us)[:10] == b"2026-03-02" for r in one if r.kind == 1)


def test_a_file_is_never_appended_to_each_start_takes_the_next_number(tmp_path: Path) -> None:
    for _ in range(3):
        raw = writer(tmp_path, "host.example-12")  # ids may hold dots
        raw.write(frames(5))
        raw.abandon()  # as after a crash: no END, no epilogue
    names = [path.name for _, _, path in Layout(tmp_path).raw_files(DAY)]
    assert names == [f"host.example-12.{n}.zst" for n in range(3)]
    assert raw_file(DAY, "host.example-12", 2) == f"raw/{DAY}/host.example-12.2.zst"
    assert parse_raw_name("notes.txt") is None and parse_raw_name("x.zst") is None


# ---- the archive: thread, queue, floor, prune, errors ---------------------------------------


def wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_prune_removes_days_at_raw_keep_days_and_keeps_the_rest(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    for day in ("2026-02-20", "2026-02-23", "2026-02-24", "2026-03-01", DAY):
        layout.raw_dir(day).mkdir(parents=True)
        (layout.raw_dir(day) / "x.0.zst").write_bytes(b"")
    (tmp_path / "raw" / "not-a-day").mkdir()
    archive = Archive(tmp_path, "ing-1", keep_days=7, wall=T0.timestamp)
    assert archive.prune() == ["2026-02-20", "2026-02-23"]  # 10 and 7 days old
    assert layout.raw_days() == ["2026-02-24", "2026-03-01", DAY]
    assert (tmp_path / "raw" / "not-a-day").is_dir()
    assert Archive(tmp_path, "ing-1", keep_days=0, wall=lambda: 2e9).prune() == []


def test_the_floor_stops_archiving_counts_it_alerts_and_resumes_with_a_loss_record(
    tmp_path: Path,
) -> None:
    free = {"bytes": 10 * 1024**3}
    archive = Archive(tmp_path, "ing-1", min_free_mb=1024, free_bytes=lambda _root: free["bytes"])
    archive.start()
    try:
        for frame in frames(50):
            archive.keep(frame)
        archive.pump()
        wait_until(lambda: archive.frames == 50)
        assert archive.trouble() is None and archive.status_fields()["raw_state"] == OK
        free["bytes"] = 1000 * 1024**2  # below the floor
        wait_until(lambda: archive.state == DISK_FLOOR)
        lost = frames(30, start=T0 + timedelta(seconds=5))
        for frame in lost:
            archive.keep(frame)
        archive.pump()
        wait_until(lambda: archive.dropped == 30)
        severity, title, detail = archive.trouble() or ("", "", "")
        assert severity == CRITICAL and "disk" in title and "RAW_MIN_FREE_MB=1,024" in detail
        assert archive.status_fields()["raw_state"] == DISK_FLOOR
        free["bytes"] = 1100 * 1024**2  # above the floor, not above the hysteresis
        time.sleep(1.3)
        assert archive.state == DISK_FLOOR
        free["bytes"] = 10 * 1024**3
        wait_until(lambda: archive.state == OK)
        for frame in frames(20, start=T0 + timedelta(seconds=9)):
            archive.keep(frame)
        archive.pump()
        wait_until(lambda: archive.frames == 70)
    finally:
        assert archive.close()
    files = Layout(tmp_path).raw_files(DAY)
    assert [n for _, n, _ in files] == [0, 1]  # the floor ended file 0; file 1 after it
    first, info = read_all(files[0][2])
    assert info.complete and sum(r.kind == rawfile.BINARY for r in first) == 50
    second, _ = read_all(files[1][2])
    loss = next(r for r in second if r.kind == rawfile.LOSS).json()
    assert loss["frames"] == 30 and loss["reason"] == "disk_floor"
    assert (
        STAMPS.text(loss["first_us"]) == lost[0][1] and STAMPS.text(loss["last_us"]) == lost[-1][1]
    )
    assert [r.kind for r in second[1:3]] == [rawfile.LOSS, rawfile.BINARY]


def test_the_hot_path_never_waits_a_full_queue_is_counted_and_written_down(
    tmp_path: Path,
) -> None:
    archive = Archive(tmp_path, "ing-1", queue_bytes=100_000)
    kept = frames(60)  # ~60 kB: fits
    for frame in kept:
        archive.keep(frame)
    archive.pump()
    dropped = frames(200, start=T0 + timedelta(seconds=1))  # would exceed the bound
    started = time.perf_counter()
    for frame in dropped:
        archive.keep(frame)
    archive.pump()  # the thread is not even running: nothing may block
    assert time.perf_counter() - started < 0.5
    assert archive.dropped == 200 and archive.pending == []
    severity, title, _ = archive.trouble() or ("", "", "")
    assert severity == WARNING and "dropping" in title
    assert archive.status_fields()["raw_state"] == "dropping"
    archive.start()
    after = frames(5, start=T0 + timedelta(seconds=3))
    wait_until(lambda: archive.queued_bytes == 0)
    for frame in after:
        archive.keep(frame)
    archive.pump()
    assert archive.close()
    (path,) = [p for _, _, p in Layout(tmp_path).raw_files(DAY)]
    records, info = read_all(path)
    assert info.complete
    kinds = [r.kind for r in records]
    loss = records[kinds.index(rawfile.LOSS)].json()
    assert loss["frames"] == 200 and loss["reason"] == "queue_full"
    written = [r.payload for r in records if r.kind == rawfile.BINARY]
    assert written == [f for f, _ in kept + after]


def test_a_write_error_is_counted_retried_and_recovered(tmp_path: Path) -> None:
    (tmp_path / "raw").write_text("a file where the folder should be")
    archive = Archive(tmp_path, "ing-1")
    archive.start()
    try:
        for frame in frames(10):
            archive.keep(frame)
        archive.pump()
        wait_until(lambda: archive.state == ERROR)
        assert archive.dropped == 10 and archive.status_fields()["raw_error"]
        assert (archive.trouble() or ("",))[0] == CRITICAL
        (tmp_path / "raw").unlink()
        archive._retry_at = 0.0  # the backoff is seconds long; no need to wait it out here
        for frame in frames(4, start=T0 + timedelta(seconds=2)):
            archive.keep(frame)
        archive.pump()
        wait_until(lambda: archive.frames == 4)
        assert archive.state == OK and archive.error is None
    finally:
        assert archive.close()
    (path,) = [p for _, _, p in Layout(tmp_path).raw_files(DAY)]
    records, _ = read_all(path)
    assert records[1].kind == rawfile.LOSS and records[1].json()["reason"] == "write_error"


def test_close_writes_what_the_hot_path_appended_last(tmp_path: Path) -> None:
    archive = Archive(tmp_path, "ing-1")
    archive.start()
    sent = frames(100)
    for frame in sent:
        archive.keep(frame)  # never pumped: close() must hand these over
    assert archive.close()
    (path,) = [p for _, _, p in Layout(tmp_path).raw_files(DAY)]
    records, info = read_all(path)
    assert info.complete and [r.payload for r in records if r.kind == 1] == [f for f, _ in sent]


def test_trouble_becomes_an_alert_condition_and_clears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_module, "REPORT_S", 0.05)
    keys = Keys()
    archive = Archive(tmp_path, "Host-A.1", queue_bytes=10)
    assert archive.condition_id == "raw_archive:host-a.1"

    async def scenario() -> tuple[object, object]:
        client = fakeredis.FakeAsyncRedis(decode_responses=True)
        task = asyncio.create_task(archive.run(client, keys))
        archive._queue_dropped += 1
        archive._last_drop = time.monotonic()  # as if the queue had just been full
        archive._last_drop_reason = "queue_full"
        await asyncio.sleep(0.4)
        raised = await client.hget(keys.alert_conditions, archive.condition_id)
        archive._last_drop = -1e9  # a minute has passed without drops
        await asyncio.sleep(0.4)
        cleared = await client.hget(keys.alert_conditions, archive.condition_id)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return raised, cleared

    raised, cleared = asyncio.run(scenario())
    assert raised is not None and cleared is None
    condition = decode(archive.condition_id, str(raised))
    assert condition.condition.severity == WARNING and condition.source == "Host-A.1"
    assert "fell over 0 MiB behind; 1 frame(s) not archived" in condition.condition.detail
    assert condition.expires_at is not None  # it lapses if the ingestor dies
