"""Settings: defaults, validation with one message naming every bad variable, hidden secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.settings import Settings, SettingsError, redact_url

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJkYXRhIjp7InVpZCI6MX19.c2lnbmF0dXJl"


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.redis_url.reveal() == "redis://localhost:6379/0" and not s.redis_url_set
    assert s.stockbit_ws_url == "wss://wss-jkt.trading.stockbit.com/ws"
    assert s.stockbit_api_url == "https://exodus.stockbit.com"
    assert (s.data_dir, s.web_host, s.web_port) == (Path("data"), "127.0.0.1", 5151)
    assert (s.log_level, s.log_format, s.key_prefix, s.partitions) == (
        "INFO",
        "text",
        "obpipe:",
        16,
    )
    assert s.commit_interval_ms <= 500 and s.ping_interval_s == 10
    assert not s.has_stockbit_token and s.web_admin_token is None


def test_values_are_parsed() -> None:
    s = Settings.from_env(
        {
            "REDIS_URL": "unix:///tmp/redis.sock",
            "TICKERS": "bbca, TLKM,BBCA  goto",
            "WEB_PORT": "8080",
            "LOG_LEVEL": "debug",
            "LOG_FORMAT": "JSON",
            "PARTITIONS": "4",
            "OBPIPE_PREFIX": "test",
            "SUBSCRIBE_TRADES": "off",
            "STOCKBIT_API_URL": "http://127.0.0.1:9000/",
            "STOCKBIT_USER_ID": "1234567",
        }
    )
    assert s.redis_url_set and s.tickers == ("BBCA", "TLKM", "GOTO")
    assert (s.web_port, s.log_level, s.log_format, s.partitions) == (8080, "DEBUG", "json", 4)
    assert s.key_prefix == "test:" and not s.subscribe_trades
    assert s.stockbit_api_url == "http://127.0.0.1:9000" and s.stockbit_user_id == "1234567"


def test_every_bad_variable_is_named_at_once(tmp_path: Path) -> None:
    env = {
        "REDIS_URL": "http://localhost",
        "STOCKBIT_WS_URL": "https://not-a-websocket",
        "TICKERS": "BBCA,2BBCA,:BBCA",
        "WEB_PORT": "70000",
        "LOG_LEVEL": "chatty",
        "LOG_FORMAT": "xml",
        "PARTITIONS": "zero",
        "STOCKBIT_TOKEN_FILE": str(tmp_path / "missing" / "token"),
        "STOCKBIT_USER_ID": "abc",
        "COMMIT_INTERVAL_MS": "-5",
        "WEB_ADMIN_TOKEN": "short",
    }
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    message = str(info.value)
    for name in (
        "REDIS_URL", "STOCKBIT_WS_URL", "TICKERS", "WEB_PORT", "LOG_LEVEL", "LOG_FORMAT",
        "PARTITIONS", "STOCKBIT_TOKEN_FILE", "STOCKBIT_USER_ID", "COMMIT_INTERVAL_MS",
        "WEB_ADMIN_TOKEN",
    ):  # fmt: skip
        assert name in message, name
    assert len(info.value.problems) == len(env)
    assert "'2BBCA'" in message and "':BBCA'" in message


def test_token_and_token_file_are_exclusive(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with pytest.raises(SettingsError, match="not both"):
        Settings.from_env({"STOCKBIT_TOKEN": TOKEN, "STOCKBIT_TOKEN_FILE": str(token_file)})
    s = Settings.from_env({"STOCKBIT_TOKEN_FILE": str(token_file)})
    assert s.has_stockbit_token and s.stockbit_token_file == token_file


def test_secrets_hidden_from_repr_and_errors() -> None:
    env = {
        "STOCKBIT_TOKEN": TOKEN,
        "STOCKBIT_WS_KEY": "K" * 43 + "=",
        "WEB_ADMIN_TOKEN": "admin-secret-123",
        "REDIS_URL": "redis://user:p4ssw0rd@redis:6379/0",
    }
    s = Settings.from_env(env)
    text = repr(s) + str(s)
    for secret in (TOKEN, "K" * 43, "admin-secret-123", "p4ssw0rd"):
        assert secret not in text
    assert "redis://user:<hidden>@redis:6379/0" in text
    assert set(s.secrets()) == {TOKEN, "K" * 43 + "=", "admin-secret-123", "p4ssw0rd"}
    with pytest.raises(SettingsError) as info:
        Settings.from_env({**env, "STOCKBIT_TOKEN": "not-a-jwt-secret-value", "WEB_PORT": "x"})
    assert "not-a-jwt-secret-value" not in str(info.value)


def test_redact_url_without_password() -> None:
    assert redact_url("redis://localhost:6379/0") == "redis://localhost:6379/0"


def test_alert_settings() -> None:
    bot = "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/987654321"
    mail = "mailtos://me:s3cretpass@example.com?to=a@example.com,b@example.com"
    s = Settings.from_env(
        {
            "ALERT_URLS": f"{bot}, {mail}\n ntfy://obpipe-alerts-7xq2k",
            "ALERT_GAP_S": "90",
            "ALERT_LAG_S": "12.5",
            "ALERT_REPEAT_MIN": "0",
        }
    )
    assert [u.reveal() for u in s.alert_urls] == [bot, mail, "ntfy://obpipe-alerts-7xq2k"]
    assert (s.alert_gap_s, s.alert_lag_s, s.alert_repeat_min) == (90.0, 12.5, 0)
    assert bot not in repr(s) and "AAHdq" not in repr(s)
    hidden = s.secrets()
    assert bot in hidden and "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw" in hidden
    assert "s3cretpass" in hidden and "obpipe-alerts-7xq2k" in hidden
    assert "987654321" not in hidden and "example.com" not in hidden  # no secrets, common text
    default = Settings.from_env({})
    assert default.alert_urls == () and default.alert_repeat_min == 30


def test_bad_alert_urls_are_named_by_position_not_content() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(
            {"ALERT_URLS": "json://ok/x secret-bot-token-123 ntfy://t", "ALERT_GAP_S": "0"}
        )
    message = str(caught.value)
    assert "ALERT_URLS: entry 2 is not a URL, of 3" in message
    assert "secret-bot-token-123" not in message
    assert "ALERT_GAP_S" in message
