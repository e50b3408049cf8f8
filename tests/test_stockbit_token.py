"""JWT claims, read without verification."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stockbit import ProtocolError
from stockbit.token import mint_unsigned, read_claims
from tests.test_stockbit_request import TOKEN


def test_reads_uid_and_expiry_of_the_worked_token() -> None:
    claims = read_claims(TOKEN)
    assert claims.user_id == "1234567"
    assert claims.issued_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert claims.expires_at == datetime(2026, 1, 2, tzinfo=UTC)
    assert claims.expired(datetime(2026, 1, 2, tzinfo=UTC))
    assert not claims.expired(datetime(2026, 1, 1, 12, tzinfo=UTC))


def test_mint_round_trip() -> None:
    assert mint_unsigned(1234567, 1767225600, 1767312000) == TOKEN
    assert read_claims(mint_unsigned(42, 0, 10)).user_id == "42"


@pytest.mark.parametrize(
    "token", ["", "abc", "a.b", "a.!!!.c", "a.bm90IGpzb24.c", "a.WzFd.c", "a.eyJleHAiOiJzb29uIn0.c"]
)
def test_bad_tokens(token: str) -> None:
    with pytest.raises(ProtocolError) as info:
        read_claims(token)
    assert token not in str(info.value) or token == ""
