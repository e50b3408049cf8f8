"""The simulator's tokens: /login/refresh with rotation, re-login, counters, closing at exp."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from ingestor.credentials import RefreshRefusedError, fetch_key, refresh_tokens
from ingestor.tokens import REFRESH, kind_of, parse_input, token
from simulator.credentials import Credentials, mint_pair, mint_refresh, mint_token
from simulator.harness import SimulatorProcess
from stockbit import request
from stockbit.token import read_claims

NOW = 1_800_000_000.0
UID = "1234567"


def test_refresh_rotates_and_counts_reuse_and_revocation() -> None:
    creds = Credentials("s", access_ttl=20, refresh_ttl=600)
    first = creds.relogin(NOW)["data"]
    assert read_claims(first["access"]["token"]).expires_at is not None
    access, refresh = first["access"]["token"], first["refresh"]["token"]
    assert creds.user_of(access, NOW) == UID
    assert creds.user_of(refresh, NOW) is None, "a refresh token is no access token"
    assert creds.refresh(access, NOW) == (None, "invalid"), "nor the other way round"
    second, why = creds.refresh(refresh, NOW + 1)
    assert why == "ok" and second is not None
    new_access = second["data"]["access"]["token"]
    assert read_claims(new_access).expires_at.timestamp() == int(NOW + 1) + 20  # type: ignore[union-attr]
    # The spent one again: reuse, refused.
    assert creds.refresh(refresh, NOW + 2) == (None, "reused")
    # A re-login ends the session: the rotated one is refused too.
    creds.relogin(NOW + 3)
    assert creds.refresh(second["data"]["refresh"]["token"], NOW + 4) == (None, "revoked")
    # Expired tokens presented are counted, wherever they are presented.
    assert creds.user_of(new_access, NOW + 60) is None
    stale = mint_refresh("s", NOW - 1000, ttl=10, session=creds.session)
    assert creds.refresh(stale, NOW) == (None, "expired")
    stats = creds.stats
    assert (stats.refreshes, stats.refresh_reuse, stats.refresh_revoked) == (1, 1, 1)
    assert stats.refresh_refused == 4 and stats.expired_presented == 2
    assert stats.relogins == 2


def test_printed_pairs_are_accepted_and_parse_as_a_pair() -> None:
    pair = mint_pair("s", NOW, int(UID), access_ttl=20)
    parsed = parse_input(json.dumps(pair))
    assert parsed.access is not None and parsed.refresh is not None
    assert kind_of(parsed.refresh) == REFRESH
    assert kind_of(token(mint_token("s", NOW))) != REFRESH
    creds = Credentials("s")
    renewed, why = creds.refresh(parsed.refresh.reveal(), NOW + 1)
    assert why == "ok" and renewed is not None
    done = subprocess.run(
        [sys.executable, "-m", "simulator", "--print-token", "--pair", "--token-ttl", "20"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    printed = json.loads(done.stdout)["data"]
    lifetime = parse_input(json.dumps(printed)).access
    assert lifetime is not None and lifetime.lifetime_s == 20


@pytest.fixture
def sim(tmp_path: Path) -> Any:
    with SimulatorProcess.start(
        tmp_path, "--token-ttl", "3", "--close-at-token-exp", "--rate", "5"
    ) as process:
        yield process


def http(url: str, method: str = "GET", data: bytes | None = None) -> Any:
    req = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(req, timeout=5) as response:
        return json.load(response)


@pytest.mark.e2e
def test_login_refresh_over_http_with_a_json_body(sim: SimulatorProcess) -> None:
    pair = http(f"{sim.api_url}/sim/relogin", "POST", b"")["data"]
    refresh = pair["refresh"]["token"]
    # The web app's request: POST, Bearer refresh token, body {} (Content-Type JSON).
    access, rotated = refresh_tokens(sim.api_url, refresh)
    assert fetch_key(sim.api_url, access)
    with pytest.raises(RefreshRefusedError):
        refresh_tokens(sim.api_url, refresh)
    http(f"{sim.api_url}/sim/relogin", "POST")
    with pytest.raises(RefreshRefusedError):
        refresh_tokens(sim.api_url, rotated)
    stats = http(f"{sim.api_url}/sim/stats")
    assert stats["refreshes"] == 1 and stats["refresh_reuse"] == 1
    assert stats["refresh_revoked"] == 1 and stats["relogins"] == 2 and stats["session"] == 2
    assert refresh not in sim.log_path.read_text() and access not in sim.log_path.read_text()


@pytest.mark.e2e
def test_sockets_are_closed_when_their_token_expires(sim: SimulatorProcess) -> None:
    pair = http(f"{sim.api_url}/sim/relogin", "POST")["data"]
    access = pair["access"]["token"]
    key = fetch_key(sim.api_url, access)
    expires = read_claims(access).expires_at
    assert expires is not None

    async def client() -> tuple[float, int | None]:
        async with connect(sim.ws_url, subprotocols=[Subprotocol("web")]) as ws:
            await ws.send(request.auth(UID, key, access))
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as exc:
                return time.time(), exc.rcvd.code if exc.rcvd else None

    closed_at, code = asyncio.run(client())
    assert code == 1008 and abs(closed_at - expires.timestamp()) < 1.0
    stats = http(f"{sim.api_url}/sim/stats")
    assert stats["closed_at_exp"] == 1 and stats["expired_presented"] == 0
