"""Read the claims Stockbit clients need from a JWT access token, without verifying it.

The client cannot verify Stockbit's signature and does not need to: the server does. It only
needs the user id (claim ``data.uid``) for the request frames and the expiry (``exp``) to warn
before the token dies.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from stockbit.errors import ProtocolError


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a Stockbit access token says about itself."""

    user_id: str | None
    issued_at: datetime | None
    expires_at: datetime | None

    def expired(self, now: datetime) -> bool:
        """True when the token's ``exp`` is at or before ``now``."""
        return self.expires_at is not None and self.expires_at <= now


def _segment(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise ProtocolError("token segment is not base64url") from None


def _instant(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError("token time claim is not a number")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise ProtocolError("token time claim out of range") from None


def read_claims(token: str) -> TokenClaims:
    """Decode a JWT's payload (unverified) into :class:`TokenClaims`.

    Raises :class:`ProtocolError` for anything that is not a three-part JWT with a JSON object
    payload. The message never includes the token itself.
    """
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise ProtocolError("token is not a JWT (expected three dot-separated parts)")
    try:
        payload = json.loads(_segment(parts[1]))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolError("token payload is not JSON") from None
    if not isinstance(payload, dict):
        raise ProtocolError("token payload is not a JSON object")
    data = payload.get("data")
    uid = data.get("uid") if isinstance(data, dict) else None
    user_id = None if uid is None or isinstance(uid, bool) else str(uid)
    return TokenClaims(
        user_id=user_id,
        issued_at=_instant(payload.get("iat")),
        expires_at=_instant(payload.get("exp")),
    )


def mint_unsigned(user_id: int, issued_at: int, expires_at: int, signature: str = "c2ln") -> str:
    """Build a JWT-shaped token with the given claims (for the simulator and tests only).

    The signature is a placeholder: nothing in this project verifies signatures, the simulator
    checks claims and its own issued-token registry instead.
    """

    def enc(obj: object) -> str:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = enc({"alg": "HS256", "typ": "JWT"})
    payload = enc({"data": {"uid": user_id}, "iat": issued_at, "exp": expires_at})
    return f"{header}.{payload}.{signature}"
