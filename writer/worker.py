"""``obpipe jobs``: an RQ worker for the end-of-day queue, with the scheduler enabled.

The writer schedules ``finalize_day`` for after each day ends (``enqueue_at``), so the worker
runs with its scheduler on; RQ itself handles SIGTERM (finish the job in hand, then exit).
"""

from __future__ import annotations

import argparse

import redis
from rq import Queue, Worker

from pipeline.startup import boot
from writer.jobs import QUEUE


def queue(client: redis.Redis) -> Queue:
    """The end-of-day queue on a connection."""
    return Queue(QUEUE, connection=client)


def main(argv: list[str] | None = None) -> int:
    """Run the worker until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="obpipe jobs", description="RQ worker for obpipe's end-of-day jobs (finalize_day)."
    )
    parser.add_argument("--burst", action="store_true", help="run the queued jobs, then exit")
    args = parser.parse_args(argv)
    settings = boot("jobs")
    client = redis.Redis.from_url(settings.redis_url.reveal())
    worker = Worker([queue(client)], connection=client)
    worker.work(burst=args.burst, with_scheduler=True, logging_level=settings.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
