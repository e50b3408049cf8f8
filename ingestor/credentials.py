"""Where the session's credentials come from: the token (inline or file), user id, WS key.

The token is re-read before every connection (so replacing ``STOCKBIT_TOKEN_FILE`` heals a
running ingestor), the user id comes from its ``data.uid`` claim unless ``STOCKBIT_USER_ID``
overrides it, and a fresh WS key is fetched from ``{STOCKBIT_API_URL}/auth/websocket/key``
before every connection unless ``STOCKBIT_WS_KEY`` is set. Each value is registered with the
log scrubber the moment it is known, and none is ever put in an exception message.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.log import register_secret
from pipeline.secret import Secret
from pipeline.settings import Settings
from stockbit.errors import ProtocolError
from stockbit.token import read_claims

ORIGIN = "https://stockbit.com"
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
"""A desktop browser's User-Agent, as the web app's own socket sends."""

KEY_PATH = "/auth/websocket/key"
KEY_TIMEOUT_S = 10.0
_UNAUTHORIZED = (401, 403)
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class AuthFailedError(Exception):
    """The credentials were refused (401): retrying soon will not help, a new token will."""


class CredentialsError(Exception):
    """The credentials could not be obtained right now (network, server error): retry."""


@dataclass(frozen=True)
class Credentials:
    """What one connection authenticates with."""

    user_id: str
    key: Secret
    token: Secret
    expires_at: datetime | None


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
                token = self.settings.stockbit_token_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise AuthFailedError(
                    f"cannot read STOCKBIT_TOKEN_FILE: {type(exc).__name__}"
                ) from None
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
        token = self.read_token()
        try:
            claims = read_claims(token)
        except ProtocolError as exc:
            raise AuthFailedError(f"the token is not a readable JWT: {exc}") from None
        self.expires_at = claims.expires_at
        user_id = self.settings.stockbit_user_id or claims.user_id
        if not user_id:
            raise AuthFailedError("no user id: the token has no data.uid claim and no override")
        return token, user_id, claims.expires_at

    def key_for(self, token: str) -> str:
        """The WS key: the configured one, or a fresh one from the key endpoint (blocking)."""
        if self.settings.stockbit_ws_key is not None:
            return self.settings.stockbit_ws_key.reveal()
        key = fetch_key(self.settings.stockbit_api_url, token)
        register_secret(key)
        return key

    def obtain(self) -> Credentials:
        """Everything one connection needs (blocking: run it in a thread)."""
        token, user_id, expires_at = self.load()
        key = self.key_for(token)
        return Credentials(user_id, Secret(key), Secret(token), expires_at)


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
    handlers: list[urllib.request.BaseHandler] = []
    if urlsplit(url).hostname in _LOOPBACK and "no_proxy" not in os.environ:
        # A proxy configured for the outside world must not swallow a local simulator.
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=timeout) as response:
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
