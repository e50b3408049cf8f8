"""``obpipe finalize YYYY-MM-DD``: verify and summarise a finished day, now or via RQ."""

from __future__ import annotations

import argparse
import json
import sys

import redis

from pipeline.startup import boot
from writer.jobs import DayNotFinishedError, finalize_day
from writer.schedule import RETRY, job_kwargs
from writer.worker import queue


def main(argv: list[str] | None = None) -> int:
    """Run finalize_day for a day in this process (default) or enqueue it for the worker."""
    parser = argparse.ArgumentParser(
        prog="obpipe finalize",
        description="Check a finished day's CSV files against the writers' counts, write "
        "$DATA_DIR/manifests/DAY.json, and gzip old days (COMPRESS_AFTER_DAYS).",
    )
    parser.add_argument("day", help="the Jakarta trading day, YYYY-MM-DD")
    parser.add_argument("--enqueue", action="store_true", help="queue it for `obpipe jobs`")
    args = parser.parse_args(argv)
    settings = boot("finalize")
    client = redis.Redis.from_url(settings.redis_url.reveal())
    kwargs = job_kwargs(settings)
    if args.enqueue:
        job = queue(client).enqueue(finalize_day, args.day, retry=RETRY, **kwargs)
        print(f"queued finalize_day({args.day}) as job {job.id}")
        return 0
    try:
        result = finalize_day(args.day, connection=client, **kwargs)  # type: ignore[arg-type]
    except (DayNotFinishedError, ValueError) as exc:
        print(f"obpipe finalize: {exc}", file=sys.stderr)
        return 2
    summary = {k: result[k] for k in ("day", "ok", "problems")}
    summary["files"] = len(result["files"])
    print(json.dumps(summary, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
