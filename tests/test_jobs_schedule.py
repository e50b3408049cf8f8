"""The writer schedules finalize_day once per day, for after the day ends in Jakarta time."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from jobs.queue import QUEUE
from jobs.schedule import DaySchedule, finalize_at
from pipeline.keys import Keys
from pipeline.layout import day_of_file
from pipeline.settings import Settings
from stockbit.timestamps import WIB


def test_day_of_and_time() -> None:
    assert day_of_file("orderbook/2026-03-02_BBCA.csv") == "2026-03-02"
    assert day_of_file("gaps/2026-03-02.csv") == "2026-03-02"
    assert finalize_at("2026-03-02", 30) == datetime(2026, 3, 3, 0, 31, tzinfo=WIB)


@pytest.mark.redis
def test_once_per_day_across_writers(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    settings = Settings.from_env({"DATA_DIR": str(tmp_path), "FINALIZE_GRACE_MIN": "15"})
    first = DaySchedule(client, Keys(), settings)
    second = DaySchedule(client, Keys(), settings)
    first.note(["2026-03-02", "2026-03-02"])
    second.note(["2026-03-02", "2026-03-03"])
    registry = ScheduledJobRegistry(queue=Queue(QUEUE, connection=client))  # type: ignore[no-untyped-call]
    assert sorted(registry.get_job_ids()) == ["finalize-2026-03-02", "finalize-2026-03-03"]
    job = Job.fetch("finalize-2026-03-02", connection=client)
    assert job.func_name == "jobs.finalize.finalize_day"
    assert job.args == ("2026-03-02",)
    assert job.kwargs["data_dir"] == str(tmp_path.resolve()) and job.kwargs["grace_min"] == 15
    when = registry.get_scheduled_time(job)
    assert when.timestamp() == finalize_at("2026-03-02", 15).timestamp()
