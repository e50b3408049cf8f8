"""The status document's pure parts: path building, time parsing, shaping a RawState."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.calendar import TradingCalendar
from pipeline.status import IngestorStatus, WriterStatus
from stockbit.timestamps import WIB
from web.snapshot import RawState, StreamInfo, build_status, counters_of, file_path, parse_instant

DAY = "2026-03-06"
NOW = datetime(2026, 3, 6, 14, 0, 5, tzinfo=WIB)  # Friday, session 2


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (f"orderbook/{DAY}_BBCA.csv", f"orderbook/{DAY}_BBCA.csv"),
        (f"orderbook/{DAY}_BBCA-W.csv", f"orderbook/{DAY}_BBCA-W.csv"),
        (f"{DAY}_BBCA.csv", None),  # not a recorded path (no folder)
        (f"trades/{DAY}_BBCA.csv", None),  # not an order book
        ("orderbook/2026-03-05_BBCA.csv", None),  # another day
        (f"orderbook/{DAY}_../../x.csv", None),
        (f"../{DAY}_BBCA.csv", None),
        (f"orderbook/{DAY}_BBCA.csv/../../etc", None),
        (f"orderbook/{DAY}_2BBCA.csv", None),  # not a ticker
        (f"/etc/{DAY}_BBCA.csv", None),
    ],
)
def test_file_paths_are_built_from_validated_parts(name: str, expected: str | None) -> None:
    root = Path("/srv/data")
    path = file_path(root, name, DAY)
    assert (str(path.relative_to(root)) if path else None) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-06T14:00:00.123456+07:00", datetime(2026, 3, 6, 7, 0, 0, 123456, tzinfo=UTC)),
        ("1772805600", datetime(2026, 3, 6, 14, 0, tzinfo=UTC)),
        ("1772805600000", datetime(2026, 3, 6, 14, 0, tzinfo=UTC)),
        ("", None),
        (None, None),
        ("soon", None),
        ("1e400", None),
    ],
)
def test_parse_instant(value: str | None, expected: datetime | None) -> None:
    assert parse_instant(value) == expected


def test_build_status_is_pure_given_its_inputs() -> None:
    raw = RawState(
        day=DAY,
        ingestors=[
            (
                IngestorStatus(
                    id="i1",
                    state="reconnecting",
                    connected_since="2026-03-06T13:00:00+07:00",
                    token_expires_at="2026-03-06T13:00:00+07:00",
                    frames=10,
                ),
                NOW.timestamp() * 1000 - 2000,
            )
        ],
        writers=[(WriterStatus(id="w1", partitions=[0], rows=7), NOW.timestamp() * 1000)],
        desired=["BBCA"],
        tickers={
            "BBCA": {"frames": "4", "trades": "3", "best_bid": "100", "best_offer": "0"},
            # The last LivePrice's figures, as the sink writes them.
            "TLKM": {"last_price": "3320", "prev_close": "3300", "day_lots": "1234.5"},
        },
        streams=[StreamInfo(0, 10, pending=1, lag=None), StreamInfo(1, 0)],
        day_counts={f"orderbook/{DAY}_BBCA.csv": "12"},
        deadletter_len=0,
        counters={"dead_letters": "5", "bad_frames": "2"},
    )
    sizes: list[Path] = []

    def size(path: Path) -> int:
        sizes.append(path)
        return 99

    doc = build_status(
        raw,
        now=NOW,
        rates={"i:i1": 1.234, "w:w1": 2.0, "tr:BBCA": 0.456},
        history=[(1.0, 2.0)],
        data_dir=Path("/d"),
        read_only=True,
        calendar=TradingCalendar(),
        file_size=size,
    )
    (ingestor,) = doc["ingestors"]
    assert ingestor["uptime_s"] is None  # not connected: no uptime counter
    assert ingestor["token_expires_in_s"] == -3605  # expired an hour ago
    assert ingestor["frames_per_s"] == 1.23 and ingestor["heartbeat_age_s"] == 2
    assert doc["writers"][0]["rows_per_s"] == 2
    assert doc["tickers"]["BBCA"]["spread"] is None  # no offer: no spread
    assert doc["tickers"]["BBCA"]["freshness"] == "none"
    assert doc["tickers"]["BBCA"]["trades"] == 3 and doc["tickers"]["BBCA"]["trades_per_s"] == 0.46
    assert doc["tickers"]["BBCA"]["frames_per_s"] is None
    assert doc["tickers"]["BBCA"]["last_price"] is None and doc["tickers"]["BBCA"]["change"] is None
    tlkm = doc["tickers"]["TLKM"]
    assert (tlkm["last_price"], tlkm["change"], tlkm["change_pct"]) == (3320, 20, 0.61)
    assert tlkm["day_lots"] == 1234.5 and tlkm["prev_close"] == 3300
    assert doc["streams"]["backlog"] == 0 and doc["streams"]["pending"] == 1
    assert doc["dead_letters"] == 7  # writers' dead letters + ingestors' bad frames
    assert doc["files"] == [{"name": f"{DAY}_BBCA.csv", "code": "BBCA", "rows": 12, "bytes": 99}]
    assert sizes == [Path(f"/d/orderbook/{DAY}_BBCA.csv")]
    assert doc["throughput"]["history"] == [[1.0, 2.0]]
    assert counters_of(raw) == {
        "t:BBCA": 4.0,
        "tr:BBCA": 3.0,
        "frames": 4.0,
        "i:i1": 10.0,
        "w:w1": 7.0,
        "rows": 7.0,
    }
