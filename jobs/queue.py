"""The end-of-day queue: its name, the job id of a day, and the one way to enqueue ``finalize_day``
(and the daily recap, :func:`enqueue_recap`, the same way: job ``recap-YYYY-MM-DD``).

The CLI (``obpipe finalize --enqueue``), the web's Finalize button and the writers' scheduler
all call :func:`enqueue_finalize`, so a day's job always has the id ``finalize-YYYY-MM-DD`` and
"already queued" means the same thing everywhere. RQ is read with a client that does not decode
responses (RQ stores pickled data); a job that cannot be read shows as ``unknown``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, cast

import redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job

from jobs.finalize import finalize_day
from jobs.recap import daily_recap
from pipeline.days import check_day
from pipeline.settings import Settings

log = logging.getLogger(__name__)

QUEUE = "obpipe"
"""The RQ queue ``obpipe jobs`` works on."""
RETRY = Retry(max=3, interval=[60, 300, 900])
"""How a failed ``finalize_day`` is retried (I/O trouble; problems in the data do not raise)."""
BUSY = frozenset({"queued", "started"})
"""Job states in which a new request to finalize the day now is refused."""
NONE = "none"
UNKNOWN = "unknown"


class FinalizeBusyError(RuntimeError):
    """The day's job is already queued or running; ``state`` says which."""

    def __init__(self, day: str, state: str) -> None:
        super().__init__(f"finalize of {day} is already {state} (job {job_id(day)})")
        self.day = day
        self.state = state


def queue(client: redis.Redis) -> Queue:
    """The end-of-day queue on a connection."""
    return Queue(QUEUE, connection=client)


def job_id(day: str) -> str:
    """The RQ job id of a day's ``finalize_day``: ``finalize-YYYY-MM-DD``."""
    return f"finalize-{check_day(day)}"


def job_kwargs(settings: Settings) -> dict[str, object]:
    """The arguments every ``finalize_day`` job gets from the enqueuing process's settings."""
    return {
        "data_dir": str(settings.data_dir.resolve()),
        "key_prefix": settings.key_prefix,
        "compress_after_days": settings.compress_after_days,
        "keep_csv_days": settings.keep_csv_days,
        "grace_min": settings.finalize_grace_min,
    }


def _state_of(job: Any) -> str:
    status = job.get_status(refresh=False)
    if status is None:
        return UNKNOWN
    return str(getattr(status, "value", status))


def job_state(connection: redis.Redis, day: str) -> str:
    """The state of ``finalize-<day>``: ``scheduled``, ``queued``, ``started``, ``finished``,
    ``failed``, ... as RQ names it, ``none`` when there is no such job, ``unknown`` when it
    cannot be read. Raises ``redis.RedisError`` when Redis is down."""
    try:
        job = Job.fetch(job_id(day), connection=connection)
        return str(job.get_status().value)
    except NoSuchJobError:
        return NONE
    except redis.RedisError:
        raise
    except Exception:  # a job hash RQ cannot read must not break the page
        log.warning("finalize job of %s unreadable", day, exc_info=True)
        return UNKNOWN


def job_states(connection: redis.Redis, days: list[str]) -> dict[str, str]:
    """:func:`job_state` of many days in one pipelined round trip."""
    if not days:
        return {}
    try:
        jobs = Job.fetch_many([job_id(d) for d in days], connection=connection)
    except redis.RedisError:
        raise
    except Exception:
        # One unreadable job hash: fall back to reading them one by one.
        return {day: job_state(connection, day) for day in days}
    states = {}
    for day, job in zip(days, jobs, strict=True):
        try:
            states[day] = NONE if job is None else _state_of(job)
        except Exception:
            states[day] = UNKNOWN
    return states


def enqueue_finalize(
    connection: redis.Redis,
    day: str,
    kwargs: dict[str, object],
    *,
    at: datetime | None = None,
) -> Job:
    """Queue ``finalize_day(day)`` as job ``finalize-<day>``: now, or at ``at`` (scheduled).

    Now: refused with :class:`FinalizeBusyError` while the day's job is queued or running;
    otherwise an earlier job of that id (finished, failed, or still scheduled for later) is
    deleted first, so it leaves its RQ registry and a scheduled one does not run a second time.
    ``connection`` must not decode responses (RQ stores pickled data).
    """
    the_id = job_id(day)
    old: Any = None
    try:
        old = Job.fetch(the_id, connection=connection)
    except NoSuchJobError:
        pass
    except redis.RedisError:
        raise
    except Exception:  # unreadable: the new job's hash replaces it
        log.warning("earlier finalize job of %s unreadable; replacing it", day, exc_info=True)
    if old is not None:
        state = _state_of(old)
        if state in BUSY:
            raise FinalizeBusyError(day, state)
        old.delete()
    if at is None:
        return queue(connection).enqueue(finalize_day, day, job_id=the_id, retry=RETRY, **kwargs)
    job = queue(connection).enqueue_at(at, finalize_day, day, job_id=the_id, retry=RETRY, **kwargs)
    return cast(Job, job)


def recap_job_id(day: str) -> str:
    """The RQ job id of a day's ``daily_recap``: ``recap-YYYY-MM-DD``."""
    return f"recap-{check_day(day)}"


def recap_kwargs(settings: Settings) -> dict[str, object]:
    """The arguments every ``daily_recap`` job gets from the scheduling process's settings."""
    return {
        "data_dir": str(settings.data_dir.resolve()),
        "key_prefix": settings.key_prefix,
        "holidays_file": str(settings.holidays_file) if settings.holidays_file else None,
    }


def enqueue_recap(
    connection: redis.Redis,
    day: str,
    kwargs: dict[str, object],
    *,
    at: datetime | None = None,
) -> Job:
    """Queue ``daily_recap(day)`` as job ``recap-<day>``, now or at ``at``; an earlier job of
    that id is replaced unless it is queued or running (then it is returned as it is)."""
    the_id = recap_job_id(day)
    try:
        old: Any = Job.fetch(the_id, connection=connection)
    except NoSuchJobError:
        old = None
    except redis.RedisError:
        raise
    except Exception:  # unreadable: the new job's hash replaces it
        log.warning("earlier recap job of %s unreadable; replacing it", day, exc_info=True)
        old = None
    if old is not None:
        if _state_of(old) in BUSY:
            return cast(Job, old)
        old.delete()
    if at is None:
        return queue(connection).enqueue(daily_recap, day, job_id=the_id, **kwargs)
    return cast(Job, queue(connection).enqueue_at(at, daily_recap, day, job_id=the_id, **kwargs))
