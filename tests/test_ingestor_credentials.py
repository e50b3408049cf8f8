"""Credentials: token from env or file (re-read), user id from the JWT, key from the endpoint."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ingestor.credentials import (
    AuthFailedError,
    CredentialsError,
    CredentialSource,
    fetch_key,
    token_file_signature,
)
from pipeline.log import ScrubbingFormatter
from pipeline.settings import Settings
from stockbit.token import mint_unsigned

TOKEN = mint_unsigned(7654321, 1_767_225_600, 4_102_444_800)
"""Valid until 2100: an expired access token is refused before it is presented."""
KEY = "K" * 43 + "="


class _Handler(BaseHTTPRequestHandler):
    status = 200
    body = json.dumps({"message": "ok", "data": {"key": KEY}}).encode()
    seen: list[dict[str, str]] = []  # noqa: RUF012

    def do_GET(self) -> None:
        type(self).seen.append({"path": self.path, **dict(self.headers)})
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_key_fetch_sends_bearer_and_browser_headers(api: tuple[str, type[_Handler]]) -> None:
    url, handler = api
    assert fetch_key(url, TOKEN) == KEY
    request = handler.seen[0]
    assert request["path"] == "/auth/websocket/key"
    assert request["Authorization"] == f"Bearer {TOKEN}"
    assert request["Origin"] == "https://stockbit.com"
    assert "Mozilla" in request["User-Agent"]


def test_key_fetch_401_is_an_auth_failure_and_500_is_transient(
    api: tuple[str, type[_Handler]],
) -> None:
    url, handler = api
    handler.status = 401
    with pytest.raises(AuthFailedError) as refused:
        fetch_key(url, TOKEN)
    assert TOKEN not in str(refused.value)
    handler.status = 503
    with pytest.raises(CredentialsError):
        fetch_key(url, TOKEN)
    handler.status = 200
    handler.body = b"{}"
    with pytest.raises(CredentialsError):
        fetch_key(url, TOKEN)


def test_unreachable_endpoint_is_transient() -> None:
    with pytest.raises(CredentialsError):
        fetch_key("http://127.0.0.1:9", TOKEN, timeout=2)


def test_token_file_is_reread_and_registered_as_secret(
    tmp_path: Path, api: tuple[str, type[_Handler]]
) -> None:
    url, _ = api
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    source = CredentialSource(
        Settings.from_env({"STOCKBIT_TOKEN_FILE": str(path), "STOCKBIT_API_URL": url})
    )
    creds = source.obtain()
    assert creds.user_id == "7654321" and creds.key.reveal() == KEY
    assert creds.token.reveal() == TOKEN
    assert creds.expires_at is not None and creds.expires_at.timestamp() == 4_102_444_800
    assert TOKEN in ScrubbingFormatter.secrets and KEY in ScrubbingFormatter.secrets
    before = token_file_signature(path)
    other = mint_unsigned(1111111, 1_767_225_600, 4_102_444_800)
    path.write_text(other)
    assert token_file_signature(path) != before
    assert source.obtain().user_id == "1111111"
    path.write_text("")
    with pytest.raises(AuthFailedError):
        source.obtain()
    path.write_text("not-a-jwt")
    with pytest.raises(AuthFailedError):
        source.obtain()


def test_overrides_skip_the_claim_and_the_endpoint() -> None:
    source = CredentialSource(
        Settings.from_env(
            {
                "STOCKBIT_TOKEN": TOKEN,
                "STOCKBIT_USER_ID": "42",
                "STOCKBIT_WS_KEY": KEY,
                "STOCKBIT_API_URL": "http://127.0.0.1:9",
            }
        )
    )
    creds = source.obtain()
    assert (creds.user_id, creds.key.reveal()) == ("42", KEY)
    assert repr(creds).count("hidden") == 2 and TOKEN not in repr(creds)


def test_no_token_at_all_is_an_auth_failure() -> None:
    with pytest.raises(AuthFailedError):
        CredentialSource(Settings.from_env({})).obtain()


def test_scrubbed_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    formatter = ScrubbingFormatter(json_lines=False, process="test")
    CredentialSource(Settings.from_env({"STOCKBIT_TOKEN": TOKEN})).read_token()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token=%s", (TOKEN,), None)
    assert TOKEN not in formatter.format(record)
