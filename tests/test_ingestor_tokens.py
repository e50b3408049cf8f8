"""The token store: what `obpipe token set` reads, the JSON file (0600, atomic), bare JWTs."""

from __future__ import annotations

import io
import json
import os
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ingestor import tokens
from ingestor.credentials import AuthFailedError, CredentialSource
from ingestor.tokenctl import TokenCommandError, token_set, token_status
from ingestor.tokens import (
    REFRESH,
    TokenError,
    commit_refresh,
    kind_of,
    mark_refused,
    parse_input,
    read_store,
    store_pair,
    token,
)
from pipeline import cli
from pipeline.log import ScrubbingFormatter
from pipeline.settings import Settings
from simulator.credentials import mint_pair, mint_refresh, mint_token

SECRET = "tests"
NOW = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
UID = 7654321


def pair_json(now: datetime = NOW, access_ttl: float = 86_400) -> dict[str, Any]:
    return mint_pair(SECRET, now.timestamp(), UID, access_ttl=access_ttl)


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env(
        {
            "STOCKBIT_TOKEN_FILE": str(tmp_path / "token"),
            "STOCKBIT_API_URL": "http://127.0.0.1:9",
            "REDIS_URL": "redis://127.0.0.1:9/0",
            **env,
        }
    )


# ---- what the operator pastes ------------------------------------------------------------


def test_parse_the_refresh_answer_its_data_part_two_lines_and_one_token() -> None:
    answer = pair_json()
    access = answer["data"]["access"]["token"]
    refresh = answer["data"]["refresh"]["token"]
    for text in (json.dumps(answer), json.dumps(answer["data"]), f"{access}\n{refresh}\n"):
        parsed = parse_input(text)
        assert parsed.access is not None and parsed.access.reveal() == access
        assert parsed.refresh is not None and parsed.refresh.reveal() == refresh
    lone = parse_input(f"  {refresh}  ")
    assert lone.access is None and lone.refresh is not None and lone.refresh.reveal() == refresh
    only_access = parse_input(f"Bearer {access}")
    assert only_access.access is not None and only_access.refresh is None
    assert access in ScrubbingFormatter.secrets and refresh in ScrubbingFormatter.secrets


def test_a_lone_jwt_is_a_refresh_token_by_claim_or_by_lifetime() -> None:
    now = NOW.timestamp()
    assert kind_of(token(mint_refresh(SECRET, now, ttl=60))) == REFRESH  # typ claim
    # Stockbit's own refresh tokens: told apart by a lifetime over two days.
    week = tokens.token(mint_token(SECRET, now, UID, ttl=7 * 86_400))
    day = tokens.token(mint_token(SECRET, now, UID, ttl=86_400))
    assert kind_of(week) == REFRESH and kind_of(day) == tokens.ACCESS


@pytest.mark.parametrize(
    "text",
    ["", "   ", "{not json", '{"data": {}}', '{"access": {"token": "nope"}}', "a.b.c d.e.f g.h.i"],
)
def test_bad_input_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(TokenError) as refused:
        parse_input(text)
    assert "a.b.c" not in str(refused.value)


# ---- the file ----------------------------------------------------------------------------


def test_store_writes_json_0600_atomically_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "token"
    parsed = parse_input(json.dumps(pair_json()))
    assert parsed.access is not None
    store_pair(path, parsed.access, parsed.refresh, now=NOW, by="test")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["format"] == 1 and doc["how"] == "token set" and doc["fence"] == 0
    assert doc["access"]["expires_at"].endswith("+07:00")
    store = read_store(path)
    assert store.writable and store.refused is None
    assert store.access is not None and store.access.reveal() == parsed.access.reveal()
    assert store.refresh is not None and parsed.refresh is not None
    assert store.refresh.reveal() == parsed.refresh.reveal()
    assert store.access.lifetime_s == 86_400
    # Nothing but the file and its lock in the folder: the temporary file was renamed.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".token.lock", "token"]


def test_a_crash_while_writing_leaves_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "token"
    first = parse_input(json.dumps(pair_json()))
    assert first.access is not None
    store_pair(path, first.access, first.refresh, now=NOW, by="test")
    before = path.read_bytes()

    def crash(*_args: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    second = parse_input(json.dumps(pair_json(NOW + timedelta(hours=1))))
    assert second.access is not None
    with pytest.raises(OSError):
        store_pair(path, second.access, second.refresh, now=NOW, by="test")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_bare_access_jwt_keeps_working_read_only(tmp_path: Path) -> None:
    path = tmp_path / "token"
    access = mint_token(SECRET, datetime.now(UTC).timestamp(), UID)
    path.write_text(access + "\n")
    store = read_store(path)
    assert not store.writable and store.refresh is None
    assert store.access is not None and store.access.reveal() == access
    # The ingestor reads it as before; the refresher never rewrites it.
    source = CredentialSource(settings(tmp_path, STOCKBIT_WS_KEY="K" * 43 + "="))
    assert source.obtain().token.reveal() == access
    new = parse_input(json.dumps(pair_json()))
    assert new.access is not None and new.refresh is not None
    assert not commit_refresh(path, access, new.access, new.refresh, fence=9, now=NOW, by="x")
    assert not mark_refused(path, access, "HTTP 401", now=NOW, by="x")
    assert path.read_text() == access + "\n"


def test_compare_and_swap_on_the_spent_refresh_token_and_the_fence(tmp_path: Path) -> None:
    path = tmp_path / "token"
    first = parse_input(json.dumps(pair_json()))
    assert first.access is not None and first.refresh is not None
    store_pair(path, first.access, first.refresh, now=NOW, by="test")
    spent = first.refresh.reveal()
    renewed = parse_input(json.dumps(pair_json(NOW + timedelta(minutes=1))))
    assert renewed.access is not None and renewed.refresh is not None
    assert commit_refresh(path, spent, renewed.access, renewed.refresh, fence=5, now=NOW, by="a")
    store = read_store(path)
    assert store.fence == 5 and store.refreshed_by == "a" and store.how == "refresh"
    # A second refresh of the same (now spent) token, or one fenced out, is dropped.
    late = parse_input(json.dumps(pair_json(NOW + timedelta(minutes=2))))
    assert late.access is not None and late.refresh is not None
    assert not commit_refresh(path, spent, late.access, late.refresh, fence=6, now=NOW, by="b")
    assert renewed.refresh is not None
    current = renewed.refresh.reveal()
    assert not commit_refresh(path, current, late.access, late.refresh, fence=4, now=NOW, by="c")
    assert read_store(path).refresh is not None
    # The refusal mark sticks to the token it was made for, and token set clears it.
    assert mark_refused(path, current, "HTTP 401", now=NOW, by="a")
    assert not mark_refused(path, current, "HTTP 401", now=NOW, by="b")  # already marked
    marked = read_store(path)
    assert marked.refused == "HTTP 401" and marked.refused_at and marked.fence == 5
    store_pair(path, late.access, late.refresh, now=NOW, by="test")
    fresh = read_store(path)
    assert fresh.refused is None and fresh.fence == 5, "token set keeps the fence"


def test_writers_are_serialised_by_the_lock_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    first = parse_input(json.dumps(pair_json()))
    assert first.access is not None and first.refresh is not None
    store_pair(path, first.access, first.refresh, now=NOW, by="test")
    spent = first.refresh.reveal()
    pairs = [parse_input(json.dumps(pair_json(NOW + timedelta(seconds=i)))) for i in range(8)]
    results: list[bool] = []

    def refresh(i: int) -> None:
        p = pairs[i]
        assert p.access is not None and p.refresh is not None
        results.append(
            commit_refresh(path, spent, p.access, p.refresh, fence=i + 1, now=NOW, by=f"r{i}")
        )

    threads = [threading.Thread(target=refresh, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1, "one swap of the spent token, whatever the interleaving"


def test_missing_empty_or_garbage_files_are_auth_failures(tmp_path: Path) -> None:
    source = CredentialSource(settings(tmp_path))
    with pytest.raises(AuthFailedError, match="no token file yet"):
        source.obtain()
    (tmp_path / "token").write_text("")
    with pytest.raises(AuthFailedError, match="empty"):
        source.obtain()
    (tmp_path / "token").write_text('{"access": 5}')
    with pytest.raises(AuthFailedError):
        source.obtain()


def test_an_expired_access_token_is_refused_before_it_is_presented(tmp_path: Path) -> None:
    old = datetime.now(UTC) - timedelta(days=2)
    (tmp_path / "token").write_text(json.dumps(pair_json(old)))
    with pytest.raises(AuthFailedError, match="expired at"):
        CredentialSource(settings(tmp_path)).obtain()  # the API URL is unreachable: never asked


# ---- obpipe token set / status -----------------------------------------------------------


def test_token_set_stores_a_pasted_pair_and_status_never_prints_a_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    answer = pair_json(now)
    config = settings(tmp_path)
    err = io.StringIO()
    code = token_set(config, json.dumps(answer), path=tmp_path / "token", offline=True, out=err)
    assert code == 0
    assert stat.S_IMODE((tmp_path / "token").stat().st_mode) == 0o600
    assert token_status(config, path=tmp_path / "token", now=now) == 0
    printed = capsys.readouterr().out
    assert "stored in" in printed and "refresh token: valid until" in printed
    assert "next refresh:" in printed
    for value in (answer["data"]["access"]["token"], answer["data"]["refresh"]["token"]):
        assert value not in printed and value not in err.getvalue()


def test_token_set_exchanges_a_lone_refresh_token(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    lone = mint_refresh(SECRET, now.timestamp(), UID)
    renewed = pair_json(now)["data"]
    spent: list[str] = []

    def exchange(refresh: str) -> tuple[str, str]:
        spent.append(refresh)
        return renewed["access"]["token"], renewed["refresh"]["token"]

    code = token_set(
        settings(tmp_path), lone, path=tmp_path / "token", offline=True, out=io.StringIO(),
        exchange=exchange,
    )  # fmt: skip
    assert code == 0 and spent == [lone]
    store = read_store(tmp_path / "token")
    assert store.refresh is not None and store.refresh.reveal() == renewed["refresh"]["token"]


def test_token_set_refuses_expired_or_mismatched_tokens(tmp_path: Path) -> None:
    config = settings(tmp_path)
    old = json.dumps(pair_json(datetime.now(UTC) - timedelta(days=3)))
    with pytest.raises(TokenCommandError, match="access token is EXPIRED"):
        token_set(config, old, path=tmp_path / "token", offline=True, out=io.StringIO())
    now = datetime.now(UTC).timestamp()
    mixed = f"{mint_token(SECRET, now, 1)}\n{mint_refresh(SECRET, now, 2)}"
    with pytest.raises(TokenCommandError, match="different users"):
        token_set(config, mixed, path=tmp_path / "token", offline=True, out=io.StringIO())
    assert not (tmp_path / "token").exists()
    with pytest.raises(TokenCommandError, match="no such folder"):
        token_set(config, old, path=tmp_path / "nope" / "token", offline=True, out=io.StringIO())


def test_cli_token_set_creates_the_file_from_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "token"
    monkeypatch.setenv("STOCKBIT_TOKEN_FILE", str(path))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(pair_json(datetime.now(UTC)))))
    assert cli.main(["token", "set", "--offline"]) == 0
    assert read_store(path).refresh is not None
    assert cli.main(["token", "status"]) == 0
    monkeypatch.delenv("STOCKBIT_TOKEN_FILE")
    assert cli.main(["token", "status"]) == 2
    assert "STOCKBIT_TOKEN_FILE is not set" in capsys.readouterr().err
