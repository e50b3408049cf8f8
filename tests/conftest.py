"""Shared fixtures: a real redis-server per test session and a clean database per test; a
fakeredis client and a settable clock for view tests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import fakeredis
import pytest
import redis

from pipeline.embedded_redis import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One real redis-server subprocess for the whole session (loopback, free port)."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """The session server's URL, flushed before each test that uses it."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A decoded-responses client on a flushed database."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


class Clock:
    """A settable clock, for apps that take one (``create_app(clock=...)``)."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


@pytest.fixture
def fake() -> Iterator[fakeredis.FakeRedis]:
    """A decoding fakeredis client (single-function and Flask view tests only)."""
    client = fakeredis.FakeRedis(decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty DATA_DIR for one test."""
    path = tmp_path / "data"
    path.mkdir()
    return path
