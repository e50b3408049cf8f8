"""Every Python example in README.md runs on a simulated trading day, from CSV and from Parquet, and its result is checked: a non-empty spread series, spread ≥ 0 wherever both sides exist, VWAP within the day's high and low, gaps masked."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import fakeredis
import pandas as pd
import pytest

from bench.simday import SimDay, simulate_day
from jobs.finalize import finalize_day
from pipeline.days import WIB
from pipeline.keys import Keys

ROOT = Path(__file__).resolve().parent.parent
DAY = "2026-03-02"
DUCKDB = "duckdb>=1.1,<3"
SNIPPETS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> SimDay:
    """A trading day of BBCA and TLKM with a 30-second outage at 11:00, as the writer writes it."""
    root = tmp_path_factory.mktemp("readme") / "data"
    return simulate_day(root, DAY, ("BBCA", "TLKM"), levels=20, book_every=3.0, trade_every=3.0)


@pytest.fixture(scope="module", params=["csv", "parquet"])
def workdir(
    request: pytest.FixtureRequest, simulated: SimDay, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A folder holding ``data/``: the CSVs only, or the day finalized (Parquet beside them)."""
    where = tmp_path_factory.mktemp(request.param)
    shutil.copytree(simulated.root, where / "data")
    if request.param == "parquet":
        client = fakeredis.FakeRedis()
        client.hset(Keys("obpipe:").day_counts(DAY), mapping=simulated.rows)  # type: ignore[arg-type]
        result = finalize_day(
            DAY, str(where / "data"), connection=client, now=datetime(2026, 3, 3, 1, tzinfo=WIB)
        )
        assert result["ok"] and len(result["parquet"]) == 4
    return where


@pytest.fixture(scope="module")
def duckdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """Where DuckDB can be imported from: already installed, or pip-installed into a private
    folder (it is not a dependency); skips when pip cannot get it within two minutes."""
    try:
        importlib.import_module("duckdb")
        return None
    except ModuleNotFoundError:
        pass
    target = tmp_path_factory.mktemp("duckdb")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), DUCKDB],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("DuckDB example: pip could not install duckdb within 120 s")
    if done.returncode != 0:
        pytest.skip(f"DuckDB example: pip could not install duckdb: {done.stderr.strip()[-300:]}")
    return target


def trades_of_the_day(workdir: Path) -> pd.DataFrame:
    frames = [pd.read_csv(path) for path in sorted((workdir / "data" / "trades").glob("*.csv"))]
    return pd.concat(frames)


def check(name: str, value: Any, workdir: Path) -> bool:
    """Check one result the README names; False if the name is not one we know."""
    prints = trades_of_the_day(workdir)
    if name == "spread":
        assert len(value) > 1000 and (value >= 0).all()
    elif name == "tob":
        both = value.dropna(subset=["bid", "ask"])
        assert len(both) > 1000 and (both.spread >= 0).all()
        assert (both.spread == both.ask - both.bid).all()
        assert value.timestamp.is_monotonic_increasing
    elif name == "vwap":
        bbca = pd.read_csv(workdir / "data" / "trades" / f"{DAY}_BBCA.csv")
        assert bbca.price.min() <= value <= bbca.price.max()
    elif name == "ladder":
        assert len(value) == 10 and value.bid_price.is_monotonic_decreasing
        assert value.ask_price.is_monotonic_increasing
        assert value.bid_price.iloc[0] < value.ask_price.iloc[0]
    elif name == "wide":
        assert "bid_price_5" in value and "ask_orders_5" in value and "bid_price_6" not in value
        carried = value.dropna(subset=["bid_price_1", "ask_price_1"])
        assert (carried.ask_price_1 > carried.bid_price_1).all()
    elif name == "imbalance":
        assert value.dropna().between(0, 1).all() and value.notna().sum() > 1000
    elif name == "clean":
        assert 0 < len(value) < 10**6
        hole = (pd.Timestamp(f"{DAY}T11:00:00+07:00"), pd.Timestamp(f"{DAY}T11:00:30+07:00"))
        inside = value.timestamp.between(*hole)
        assert not inside.any()
        # The first update after the hole carries a side taken before it: masked too.
        after = value[value.timestamp > hole[1]].iloc[0]
        assert min(after.bid_time, after.ask_time) > hole[1]
    elif name == "gaps":
        assert value.cause.astype(str).tolist() == ["disconnect"]
    elif name == "daily":
        assert len(value) == 2 and set(value.code) == {"BBCA", "TLKM"}
        assert (value.low <= value.vwap).all() and (value.vwap <= value.high).all()
        assert value.prints.sum() == len(prints)
    else:
        return False
    return True


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_example(
    index: int,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    code = SNIPPETS[index]
    if "read_parquet(" in code:
        if workdir.name.startswith("csv"):
            pytest.skip("reads the Parquet folders: runs on the finalized day")
        folder = request.getfixturevalue("duckdb_path")
        if folder is not None:
            monkeypatch.syspath_prepend(str(folder))
    monkeypatch.chdir(workdir)
    monkeypatch.delenv("DATA_DIR", raising=False)  # the examples read ./data
    namespace: dict[str, Any] = {}
    exec(compile(code, f"README.md python example {index + 1}", "exec"), namespace)
    checked = [name for name in list(namespace) if check(name, namespace[name], workdir)]
    assert checked, f"add a check for README example {index + 1} in {__file__}"


def test_the_examples_are_found() -> None:
    assert len(SNIPPETS) >= 4
    assert not any("pivot_table" in code for code in SNIPPETS), "the broken pivot is gone"
