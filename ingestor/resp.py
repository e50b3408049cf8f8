"""A minimal pipelined Redis connection for the ingestor's batches (RESP2 over asyncio streams).

redis-py parses every reply into Python objects, about 8 µs each; at tens of thousands of
``XADD`` replies a second that alone would eat the ingestor's budget. This connection only
writes pre-packed commands and *skips* over their replies, keeping the error replies. It
connects the way redis-py would for the same ``REDIS_URL`` (``redis://``, ``rediss://`` with
``ssl_cert_reqs``/``ssl_ca_certs``, ``unix://``; ``AUTH`` and ``SELECT`` as the URL says) by
reusing redis-py's URL parser. Everything else in the process uses redis-py.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from redis.connection import parse_url

from ingestor.entries import command

READ_CHUNK = 1 << 18
_DOLLAR, _MINUS, _PLUS, _COLON, _STAR = 36, 45, 43, 58, 42


class RespError(Exception):
    """Redis answered a command with an error reply (``-ERR ...``)."""


class RespConnection:
    """One connection: :meth:`write` packed commands, :meth:`skip` their replies in order."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.timeout = timeout
        self._buf = b""
        self._pos = 0

    @classmethod
    async def open(cls, url: str, timeout: float = 10.0) -> RespConnection:
        """Connect, authenticate and select the database of ``url``."""
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        async with asyncio.timeout(timeout):
            if "path" in options:
                reader, writer = await asyncio.open_unix_connection(options["path"])
            else:
                context = None
                if url.startswith("rediss://"):
                    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
                    if str(options.get("ssl_cert_reqs", "required")).lower() in ("none", "0"):
                        context.check_hostname = False
                        context.verify_mode = ssl.CERT_NONE
                reader, writer = await asyncio.open_connection(
                    options.get("host", "localhost"), int(options.get("port", 6379)), ssl=context
                )
        conn = cls(reader, writer, timeout)
        try:
            setup = []
            if options.get("password") is not None:
                user = options.get("username")
                auth = (
                    ("AUTH", user, options["password"]) if user else ("AUTH", options["password"])
                )
                setup.append(command(*auth))
            if int(options.get("db", 0) or 0):
                setup.append(command("SELECT", int(options["db"])))
            if setup:
                conn.write(b"".join(setup))
                errors = await conn.skip(len(setup))
                if errors:
                    # The message names the failing step only; never echo the password.
                    raise RespError("Redis refused the connection set-up (AUTH/SELECT)")
        except BaseException:
            conn.close()
            raise
        return conn

    def write(self, data: bytes) -> None:
        """Queue bytes on the socket (call :meth:`drain` now and then for flow control)."""
        self._writer.write(data)

    async def drain(self) -> None:
        """Wait until the socket's write buffer is below its high-water mark."""
        async with asyncio.timeout(self.timeout):
            await self._writer.drain()

    async def skip(self, count: int) -> list[str]:
        """Read ``count`` replies, discarding values; return the error replies' messages."""
        errors: list[str] = []
        buf, pos = self._buf, self._pos
        while count > 0:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                buf, pos = await self._more(buf, pos)
                continue
            kind = buf[pos]
            if kind == _DOLLAR:
                length = int(buf[pos + 1 : eol])
                stop = eol + 2 if length < 0 else eol + 4 + length
                if stop > len(buf):
                    buf, pos = await self._more(buf, pos)
                    continue
                pos = stop
            elif kind in (_PLUS, _COLON):
                pos = eol + 2
            elif kind == _MINUS:
                errors.append(buf[pos + 1 : eol].decode(errors="replace")[:300])
                pos = eol + 2
            elif kind == _STAR:
                # An array counts as its elements (nested ones add theirs in turn).
                count += max(0, int(buf[pos + 1 : eol]))
                pos = eol + 2
            else:
                raise ConnectionError(f"unexpected reply byte {kind!r} from Redis")
            count -= 1
        self._buf, self._pos = buf, pos
        return errors

    async def _more(self, buf: bytes, pos: int) -> tuple[bytes, int]:
        async with asyncio.timeout(self.timeout):
            data = await self._reader.read(READ_CHUNK)
        if not data:
            raise ConnectionError("Redis closed the connection")
        return buf[pos:] + data, 0

    def close(self) -> None:
        """Drop the connection at once (a half-read reply makes it unusable anyway)."""
        transport = self._writer.transport
        transport.abort()
