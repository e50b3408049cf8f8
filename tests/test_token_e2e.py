"""Token renewal end to end: 20-second tokens, two ingestors, no gap; a revoked one alerts, heals."""

# A simulator issuing 20-second access tokens, two ingestors, a writer and real Redis run for
# three minutes (``OBPIPE_TOKEN_E2E_S``): no gap, every refresh counted, no reuse, no expired
# token presented, with the feed keeping sockets past their token or closing them at ``exp``. Then
# a revoked refresh token: an alert, capture until the access token runs out, then
# ``auth_failed``, and ``obpipe token set`` heals it without a restart.

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from bench import audit
from bench.stack import KEYS, Stack, wait_for
from ingestor.tokens import parse_input, read_store, store_pair
from jobs.monitor import Monitor, build_monitor
from pipeline import cli
from pipeline.conditions import REFRESH_FAILED
from pipeline.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.timeout(480)]

RUN_S = float(os.environ.get("OBPIPE_TOKEN_E2E_S", "180"))
"""How long the 20-second tokens run (the issue asks for 3 minutes)."""
TTL = 20
TICKERS = "BBCA,BBRI,TLKM,ASII"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")


def relogin(api: str) -> str:
    """A browser re-login on the simulator: the new pair, every older refresh token dead."""
    request = urllib.request.Request(f"{api}/sim/relogin", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return str(response.read().decode())


def sim_stats(api: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{api}/sim/stats", timeout=5) as response:
        stats: dict[str, Any] = json.load(response)
        return stats


class TokenStack(Stack):
    """The bench stack with the token store: a pair from a simulator login."""

    def replace_token(self) -> None:
        assert self.sim is not None
        parsed = parse_input(relogin(self.sim.api_url))
        assert parsed.access is not None
        store_pair(self.token_file, parsed.access, parsed.refresh, now=datetime.now(UTC), by="test")


def counter(client: redis.Redis, name: str) -> int:
    return int(client.hget(KEYS.counters, name) or 0)


def no_jwt_in_redis(client: Any) -> None:
    """No key or value anywhere in Redis is shaped like a JWT (tokens never go there)."""
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"hash":
            values = [*client.hkeys(key), *client.hvals(key)]
        elif kind == b"set":
            values = list(client.smembers(key))
        elif kind == b"zset":
            values = list(client.zrange(key, 0, -1))
        elif kind == b"stream":
            values = [v for _, f in client.xrange(key) for kv in f.items() for v in kv]
        else:
            values = []
        for value in [key, *values]:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            assert JWT.search(text) is None, f"a token in {key!r}"


def no_jwt_in_logs(workdir: Path) -> None:
    for log in workdir.rglob("*.log"):
        found = JWT.search(log.read_text(errors="replace"))
        assert found is None, f"a token in {log.name}"


@pytest.mark.parametrize("close", [False, True], ids=["sockets-outlive-tokens", "closed-at-exp"])
def test_twenty_second_tokens_for_three_minutes_without_a_gap(tmp_path: Path, close: bool) -> None:
    args = ("--rate", "4", "--token-ttl", str(TTL), *(["--close-at-token-exp"] if close else []))
    stack = TokenStack(tmp_path, ingestors=2, tickers=TICKERS, sim_args=args)
    stack.start()
    try:
        assert stack.client is not None and stack.sim is not None
        client, api = stack.client, stack.sim.api_url
        wait_for(stack.ready, 30, "the pipeline")
        started = time.monotonic()
        while time.monotonic() - started < RUN_S:
            ingestors = stack.live()["ingestors"]
            assert all(s.state == "connected" for s in ingestors)
            assert sum(s.gaps for s in ingestors) == 0, [s.last_error for s in ingestors]
            time.sleep(2)
        wait_for(stack.settled, 30, "the writer to catch up")
        # Every way a gap shows: the ingestors' own counts, the stream (the writers trim what
        # they copied), the counters, and the gap files the writers wrote.
        gaps = (
            sum(s.gaps for s in stack.live()["ingestors"])
            + client.xlen(KEYS.gaps)
            + counter(client, "gaps")
            + len(audit.gap_windows(stack.data_dir))
        )
        stats = sim_stats(api)
        counted = counter(client, "token_refreshes")
        live = stack.live()
        handovers = sorted(s.token_handovers for s in live["ingestors"])
        refreshers = {s.token_refreshed_by for s in live["ingestors"]}
        doubles = sum(w.duplicates_dropped for w in live["writers"])
    finally:
        codes = stack.stop()
    print(
        f"\n{'closed-at-exp' if close else 'sockets-outlive-tokens'}: {RUN_S:.0f} s, "
        f"refreshes={stats['refreshes']} counted={counted} reuse={stats['refresh_reuse']} "
        f"expired_presented={stats['expired_presented']} refused={stats['refresh_refused']} "
        f"closed_at_exp={stats['closed_at_exp']} handovers={handovers} gaps={gaps} "
        f"duplicates_dropped={doubles} refreshed_by={sorted(refreshers)}"
    )
    assert all(code == 0 for code in codes.values()), codes
    assert gaps == 0
    assert stats["refreshes"] == counted >= RUN_S / TTL
    assert stats["refresh_reuse"] == 0 and stats["refresh_refused"] == 0
    assert stats["expired_presented"] == 0 and stats["revoked_presented"] == 0
    # Every socket moved to each renewed token before its own expired (none was cut at exp).
    assert handovers[0] >= RUN_S / TTL - 1
    assert stats["closed_at_exp"] == 0
    assert doubles > 0, "the overlap reached the writer, which dropped the doubles"
    assert stack.sim is not None
    found = audit.run(stack.sim.journal_path, stack.data_dir)
    assert found.missing == 0 and found.duplicated == 0 and found.mismatched == 0, found.line()
    no_jwt_in_logs(tmp_path)


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """`obpipe token set` configures the root logger; give pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def alerts_of(client: Any, condition: str, kind: str) -> list[dict[str, str]]:
    found = []
    for _, fields in client.xrange(KEYS.alerts):
        item = {k.decode(): v.decode() for k, v in fields.items()}
        if item["condition"] == condition and item["kind"] == kind:
            found.append(item)
    return found


@pytest.mark.usefixtures("cli_logging")
def test_a_revoked_refresh_token_alerts_then_token_set_heals_without_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ("--rate", "4", "--token-ttl", str(TTL), "--close-at-token-exp")
    stack = TokenStack(tmp_path, ingestors=2, tickers=TICKERS, sim_args=args)
    stack.start()
    monitor: Monitor | None = None
    try:
        assert stack.client is not None and stack.sim is not None
        client, api = stack.client, stack.sim.api_url
        # The alert monitor of `obpipe jobs`, in this process, looking every second.
        settings = Settings.from_env(
            {"REDIS_URL": stack.redis.url, "DATA_DIR": str(stack.data_dir), "OBPIPE_ID": "jobs"}
        )
        monitor = build_monitor(settings, poll_s=1.0).start()
        wait_for(stack.ready, 30, "the pipeline")
        wait_for(lambda: sim_stats(api)["refreshes"] >= 1, 30, "a first renewal")

        relogin(api)  # a browser logs in: the refresh token on file is revoked
        wait_for(lambda: sim_stats(api)["refresh_refused"] >= 1, 30, "the refused refresh")
        refused_at = time.time()
        frames_refused = sum(s.frames for s in stack.live()["ingestors"])
        started = wait_for(lambda: alerts_of(client, REFRESH_FAILED, "start"), 60, "the alert")
        alerted_in = time.time() - refused_at
        assert alerted_in < 60
        assert "paste a new token" in started[0]["title"]
        store = read_store(stack.token_file)
        assert store.refused and store.access is not None and store.access.expires_at
        expires = store.access.expires_at.timestamp()
        # Capture goes on while the access token is valid...
        while time.time() < expires - 1.0:
            assert all(s.state == "connected" for s in stack.live()["ingestors"])
            time.sleep(0.2)
        assert sum(s.frames for s in stack.live()["ingestors"]) > frames_refused
        # ...and auth_failed comes only once it is not.
        wait_for(
            lambda: all(s.state == "auth_failed" for s in stack.live()["ingestors"]),
            30,
            "auth_failed",
        )
        assert time.time() >= expires - 0.5
        assert sim_stats(api)["refresh_refused"] == 1, "no retry storm"
        card = stack.live()["ingestors"][0]
        assert card.token_refresh_state == "refused"

        # A new pair through the real command heals it: no restart.
        monkeypatch.setenv("STOCKBIT_TOKEN_FILE", str(stack.token_file))
        monkeypatch.setenv("STOCKBIT_API_URL", api)
        monkeypatch.setenv("REDIS_URL", stack.redis.url)
        monkeypatch.setattr("sys.stdin", io.StringIO(relogin(api)))
        healed_at = time.time()
        assert cli.main(["token", "set"]) == 0
        wait_for(
            lambda: all(s.state == "connected" for s in stack.live()["ingestors"]),
            15,
            "connected again",
        )
        reconnected_in = time.time() - healed_at
        before = sim_stats(api)["refreshes"]
        wait_for(lambda: sim_stats(api)["refreshes"] > before, 30, "renewal working again")
        raised: Any = client.hgetall(KEYS.alert_conditions)
        assert REFRESH_FAILED.encode() not in raised
        wait_for(lambda: alerts_of(client, REFRESH_FAILED, "clear"), 15, "the clear alert")
        stats = sim_stats(api)
        no_jwt_in_redis(client)  # statuses, conditions, alerts, streams: never a token
    finally:
        if monitor is not None:
            monitor.stop()
        codes = stack.stop()
    print(
        f"\nrevoked: alert {alerted_in:.1f} s after the refused refresh, "
        f"auth_failed at the access token's expiry, reconnected {reconnected_in:.1f} s after "
        f"`token set`; refused={stats['refresh_refused']} reuse={stats['refresh_reuse']} "
        f"refreshes={stats['refreshes']}"
    )
    assert all(code == 0 for code in codes.values()), codes
    assert stats["refresh_reuse"] == 0
    no_jwt_in_logs(tmp_path)
