"""Access tokens and websocket keys the simulator issues and checks.

Tokens are JWT-shaped (built by :func:`stockbit.token.mint_unsigned`) with a real signature: an
HMAC-SHA256 of ``header.payload`` keyed by the simulator's secret, so a token printed by one
``--print-token`` run is accepted by another simulator started with the same secret. Keys are
44-character base64 strings of 32 random bytes, remembered in memory with the user they were
issued to. Expiry is checked against the real wall clock (the virtual market clock is for
exchange timestamps only).

Nothing here logs or puts a token or key in an exception message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from stockbit.errors import ProtocolError
from stockbit.token import mint_unsigned, read_claims

DEFAULT_SECRET = "obpipe-simulator-not-a-secret"
"""The secret used when none is given: fixed, so separate runs accept each other's tokens."""

DEFAULT_USER_ID = 1234567
DEFAULT_TOKEN_TTL = 86_400.0
"""Seconds a minted token lives: 24 h, as Stockbit's access tokens."""


def _signature(secret: str, signing_input: str) -> str:
    digest = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def mint_token(
    secret: str, now: float, user_id: int = DEFAULT_USER_ID, ttl: float = DEFAULT_TOKEN_TTL
) -> str:
    """A signed token for ``user_id`` issued at ``now`` (epoch seconds) and valid for ``ttl``."""
    unsigned = mint_unsigned(user_id, int(now), int(now + ttl), signature="")
    signing_input = unsigned[:-1]  # mint_unsigned ends in "." before an empty signature
    return f"{signing_input}.{_signature(secret, signing_input)}"


class Credentials:
    """The simulator's view of who may connect: token checks and the issued-key registry."""

    def __init__(self, secret: str = DEFAULT_SECRET) -> None:
        self._secret = secret
        self._keys: dict[str, str] = {}
        self._revoked: set[str] = set()

    def mint(
        self, now: float, user_id: int = DEFAULT_USER_ID, ttl: float = DEFAULT_TOKEN_TTL
    ) -> str:
        """A token this instance accepts (see :func:`mint_token`)."""
        return mint_token(self._secret, now, user_id, ttl)

    def user_of(self, token: str, now: float) -> str | None:
        """The user id a valid token belongs to, or None (bad signature, expired, revoked)."""
        parts = token.split(".")
        if len(parts) != 3 or token in self._revoked:
            return None
        expected = _signature(self._secret, f"{parts[0]}.{parts[1]}")
        if not hmac.compare_digest(expected.encode(), parts[2].encode()):
            return None
        try:
            claims = read_claims(token)
        except ProtocolError:
            return None
        if claims.user_id is None or claims.expires_at is None:
            return None
        if claims.expires_at.timestamp() <= now:
            return None
        return claims.user_id

    def issue_key(self, token: str, now: float) -> str | None:
        """A new websocket key for the token's user, or None when the token is not valid."""
        user = self.user_of(token, now)
        if user is None:
            return None
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        self._keys[key] = user
        return key

    def authorize(
        self, user_id: str | None, key: str | None, token: str | None, now: float
    ) -> bool:
        """True when the token is valid, belongs to ``user_id`` and ``key`` was issued to it."""
        if user_id is None or key is None or token is None:
            return False
        user = self.user_of(token, now)
        return user is not None and user == user_id and self._keys.get(key) == user

    def revoke(self, token: str) -> None:
        """Treat ``token`` as expired from now on (``--expire-token-after``)."""
        self._revoked.add(token)
