"""The short soak: the full pipeline under every injected fault (ingestor SIGKILLs included) loses nothing outside a recorded gap."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import soak

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_short_soak_loses_and_doubles_nothing(tmp_path: Path) -> None:
    result, figures, recovered = soak.run(40, tmp_path, seed=11)
    line = result.line(
        kills=figures.kills, ingestor_kills=figures.ingestor_kills, feed_drops=figures.feed_drops
    )
    print(f"soak: {line}")
    assert recovered, figures.notes
    assert result.ok, (line, result.examples)
    assert result.frames > 1000 and result.rows > 50 * result.frames * 0.9
    assert result.snapshots_on_disk + result.covered_by_gaps == result.frames
    # every fault really happened ...
    assert figures.kills >= 4 and figures.restarts == figures.kills
    assert figures.ingestor_kills >= 2
    assert figures.redis_restarts == 1 and figures.token_replacements >= 1
    assert figures.feed_drops >= 3
    if os.geteuid() == 0:
        assert figures.disk_full == 1
    # ... and every outage of the feed became a gap record
    assert result.gap_causes.get("disconnect", 0) >= figures.feed_drops - 2
    assert result.gap_causes.get("auth_failed", 0) >= 1
    assert result.gap_causes.get("ticker_moved", 0) >= 1  # the killed ingestors' in-flight loss
