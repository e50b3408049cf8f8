"""Response security headers, the admin-token check, and the JSON error type.

* Every response carries a Content-Security-Policy that allows scripts and styles only from
  this origin (all JavaScript lives in ``static/app.js``; no inline scripts or handlers),
  forbids framing, and keeps the page from talking to anything but its own API.
* Control endpoints need ``Authorization: Bearer <WEB_ADMIN_TOKEN>``. Without a configured
  token the app is read-only and refuses them with 403; a missing or wrong token gets 401.
  The comparison is constant-time, and the token is never echoed, logged or rendered.
"""

from __future__ import annotations

import hmac

from flask import Response

from pipeline.secret import Secret

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


class ApiError(Exception):
    """An error answered as ``{"error": message, ...}`` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: object,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def apply_headers(response: Response) -> Response:
    """Add the security headers; API answers are also marked not cacheable."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    mimetype = response.mimetype or ""
    if mimetype == "application/json" or mimetype.startswith("text/plain"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def check_admin(configured: Secret | None, authorization: str | None) -> None:
    """Allow a control request, or raise :class:`ApiError` (403 read-only, 401 bad token)."""
    if configured is None:
        raise ApiError(
            403,
            "read-only mode: control is disabled because WEB_ADMIN_TOKEN is not set",
            read_only=True,
        )
    challenge = {"WWW-Authenticate": 'Bearer realm="obpipe"'}
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise ApiError(
            401, "missing admin token: send Authorization: Bearer <token>", headers=challenge
        )
    if not hmac.compare_digest(presented.strip().encode(), configured.reveal().encode()):
        raise ApiError(401, "wrong admin token", headers=challenge)
