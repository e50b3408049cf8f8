"""``obpipe jobs``: an RQ worker for the end-of-day queue, with the scheduler enabled.

The writer schedules ``finalize_day`` for after each day ends (``enqueue_at``), so the worker
runs with its scheduler on; RQ itself handles SIGTERM (finish the job in hand, then exit).
"""

from __future__ import annotations

import redis
from rq import Worker

from jobs.queue import queue
from pipeline.settings import Settings


def work(settings: Settings, *, burst: bool = False) -> int:
    """Run the worker until SIGTERM/SIGINT (or until the queue is empty, with ``burst``)."""
    client = redis.Redis.from_url(settings.redis_url.reveal())
    worker = Worker([queue(client)], connection=client)
    worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level)
    return 0
