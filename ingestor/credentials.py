"""Where the session's credentials come from: the token (inline or file), user id, WS key.

The token is re-read before every connection (so replacing ``STOCKBIT_TOKEN_FILE`` heals a
running ingestor), the user id comes from its ``data.uid`` claim unless ``STOCKBIT_USER_ID``
overrides it, and a fresh WS key is fetched from ``{STOCKBIT_API_URL}/auth/websocket/key``
before every connection unless ``STOCKBIT_WS_KEY`` is set. The file is the token store of
:mod:`ingestor.tokens` (access and refresh token in JSON, or one bare access JWT); an access
token whose ``exp`` has passed is refused here, without presenting it to Stockbit.
:func:`refresh_tokens` is the ``/login/refresh`` call the refresher makes. Each value is
registered with the log scrubber the moment it is known, and none is ever put in an exception
message.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from ingestor.tokens import TokenError, pair_from_json, read_store
from pipeline.log import register_secret
from pipeline.secret import Secret
from pipeline.settings import Settings
from stockbit.errors import ProtocolError
from stockbit.timestamps import wib_iso
from stockbit.token import read_claims

ORIGIN = "https://stockbit.com"
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
"""A desktop browser's User-Agent, as the web app's own socket sends."""

KEY_PATH = "/auth/websocket/key"
KEY_TIMEOUT_S = 10.0
REFRESH_PATH = "/login/refresh"
REFRESH_TIMEOUT_S = 15.0
_UNAUTHORIZED = (401, 403)
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class AuthFailedError(Exception):
    """The credentials were refused (401): retrying soon will not help, a new token will."""


class CredentialsError(Exception):
    """The credentials could not be obtained right now (network, server error): retry."""


class RefreshRefusedError(Exception):
    """``/login/refresh`` refused the refresh token (401/403): revoked by a new login, or
    already spent. Retrying the same token will not help; a new pair will."""


@dataclass(frozen=True)
class Credentials:
    """What one connection authenticates with."""

    user_id: str
    key: Secret
    token: Secret
    expires_at: datetime | None
    issued_at: datetime | None = None


def token_file_signature(path: Path | None) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of the token file, to notice it being replaced or rewritten."""
    if path is None:
        return None
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


class CredentialSource:
    """Reads the token and fetches the key for each connection, per the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.expires_at: datetime | None = None

    @property
    def token_file(self) -> Path | None:
        """The token file being watched, if the token comes from one."""
        return self.settings.stockbit_token_file

    def read_token(self) -> str:
        """The current token (file re-read each time); AuthFailedError if there is none."""
        if self.settings.stockbit_token_file is not None:
            try:
                store = read_store(self.settings.stockbit_token_file)
            except TokenError as exc:
                raise AuthFailedError(f"STOCKBIT_TOKEN_FILE: {exc}") from None
            if store.access is None:
                raise AuthFailedError("STOCKBIT_TOKEN_FILE holds no access token")
            token = store.access.reveal()
        elif self.settings.stockbit_token is not None:
            token = self.settings.stockbit_token.reveal().strip()
        else:
            raise AuthFailedError("no token configured (STOCKBIT_TOKEN or STOCKBIT_TOKEN_FILE)")
        register_secret(token)
        if not token:
            raise AuthFailedError("the token file is empty")
        return token

    def load(self) -> tuple[str, str, datetime | None]:
        """(token, user id, expiry) with the token's claims checked; AuthFailedError if bad."""
        token, user_id, expires_at, _ = self._load()
        return token, user_id, expires_at

    def _load(self) -> tuple[str, str, datetime | None, datetime | None]:
        token = self.read_token()
        try:
            claims = read_claims(token)
        except ProtocolError as exc:
            raise AuthFailedError(f"the token is not a readable JWT: {exc}") from None
        self.expires_at = claims.expires_at
        if claims.expired(datetime.now(UTC)):
            # Presenting it could only earn a 401 (and count against the account as a stale
            # client): say so here, and wait for the refresher or `obpipe token set`.
            assert claims.expires_at is not None
            raise AuthFailedError(f"the access token expired at {wib_iso(claims.expires_at)}")
        user_id = self.settings.stockbit_user_id or claims.user_id
        if not user_id:
            raise AuthFailedError("no user id: the token has no data.uid claim and no override")
        return token, user_id, claims.expires_at, claims.issued_at

    def key_for(self, token: str) -> str:
        """The WS key: the configured one, or a fresh one from the key endpoint (blocking)."""
        if self.settings.stockbit_ws_key is not None:
            return self.settings.stockbit_ws_key.reveal()
        key = fetch_key(self.settings.stockbit_api_url, token)
        register_secret(key)
        return key

    def obtain(self) -> Credentials:
        """Everything one connection needs (blocking: run it in a thread)."""
        token, user_id, expires_at, issued_at = self._load()
        key = self.key_for(token)
        return Credentials(user_id, Secret(key), Secret(token), expires_at, issued_at)


def _opener(url: str) -> urllib.request.OpenerDirector:
    handlers: list[urllib.request.BaseHandler] = []
    if urlsplit(url).hostname in _LOOPBACK and "no_proxy" not in os.environ:
        # A proxy configured for the outside world must not swallow a local simulator.
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


def fetch_key(api_url: str, token: str, timeout: float = KEY_TIMEOUT_S) -> str:
    """``GET {api_url}/auth/websocket/key`` with the token as Bearer; return ``data.key``.

    401/403 raise :class:`AuthFailedError`; anything else that goes wrong (network, 5xx,
    malformed JSON) raises :class:`CredentialsError`.
    """
    url = api_url.rstrip("/") + KEY_PATH
    request = urllib.request.Request(
        url,
        headers={
            "Authorization": f"Bearer {token}",
            "Origin": ORIGIN,
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        },
    )
    try:
        with _opener(url).open(request, timeout=timeout) as response:
            payload = response.read(65536)
    except urllib.error.HTTPError as exc:
        if exc.code in _UNAUTHORIZED:
            raise AuthFailedError(f"the key endpoint refused the token (HTTP {exc.code})") from None
        raise CredentialsError(f"the key endpoint answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CredentialsError(f"the key endpoint is unreachable: {reason}") from None
    try:
        data = json.loads(payload)
        key = data["data"]["key"]
    except (ValueError, KeyError, TypeError):
        raise CredentialsError("the key endpoint's answer has no data.key") from None
    if not isinstance(key, str) or not key:
        raise CredentialsError("the key endpoint's data.key is not a string")
    return key


def refresh_tokens(
    api_url: str, refresh_token: str, timeout: float = REFRESH_TIMEOUT_S
) -> tuple[str, str]:
    """``POST {api_url}/login/refresh`` with the refresh token as Bearer and an empty JSON
    body, as the stockbit.com web app does; returns the new ``(access, refresh)`` pair (both
    rotate: the refresh token sent is spent).

    401/403 raise :class:`RefreshRefusedError`; anything else that goes wrong raises
    :class:`CredentialsError`. Both new tokens are registered with the log scrubber before
    this returns.
    """
    url = api_url.rstrip("/") + REFRESH_PATH
    request = urllib.request.Request(
        url,
        data=b"{}",
        method="POST",
        headers={
            "Authorization": f"Bearer {refresh_token}",
            "Origin": ORIGIN,
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Content-Type": "application/json",
        },
    )
    try:
        with _opener(url).open(request, timeout=timeout) as response:
            payload = response.read(65536)
    except urllib.error.HTTPError as exc:
        if exc.code in _UNAUTHORIZED:
            raise RefreshRefusedError(
                f"the refresh endpoint refused the refresh token (HTTP {exc.code})"
            ) from None
        raise CredentialsError(f"the refresh endpoint answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CredentialsError(f"the refresh endpoint is unreachable: {reason}") from None
    try:
        access, refresh = pair_from_json(json.loads(payload))
    except (ValueError, TokenError):
        raise CredentialsError("the refresh endpoint's answer has no token pair") from None
    if access is None or refresh is None:
        raise CredentialsError("the refresh endpoint's answer lacks the access or refresh token")
    register_secret(access)
    register_secret(refresh)
    return access, refresh
