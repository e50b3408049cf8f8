"""Logging: secrets scrubbed from messages and tracebacks, JSON lines parse."""

from __future__ import annotations

import json
import logging

import pytest

from pipeline.log import configure, register_secret
from pipeline.settings import Settings

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJkYXRhIjp7InVpZCI6MX19.c2lnbmF0dXJl"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_never_reach_the_log(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    configure(Settings.from_env({"STOCKBIT_TOKEN": TOKEN, "LOG_FORMAT": fmt}), "test")
    register_secret("fetched-ws-key-value")
    log = logging.getLogger("obpipe.test")
    log.warning("token is %s and key is %s", TOKEN, "fetched-ws-key-value")
    try:
        raise RuntimeError(f"upstream echoed {TOKEN}")
    except RuntimeError:
        log.exception("failure")
    err = capsys.readouterr().err
    assert TOKEN not in err and "fetched-ws-key-value" not in err
    assert err.count("<hidden>") >= 3
    if fmt == "json":
        lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert lines[0]["level"] == "WARNING" and lines[0]["process"] == "test"
        assert "exc" in lines[1]
