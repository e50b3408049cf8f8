"""Rendezvous hashing: balanced, stable, and minimal movement when members change."""

from __future__ import annotations

from pipeline.membership import assign, mine, owners

TICKERS = [f"T{i:03d}" for i in range(300)]


def test_every_item_has_replicas_distinct_owners() -> None:
    members = ["a", "b", "c"]
    for replicas in (1, 2, 3):
        table = assign(TICKERS, members, replicas)
        counts = {t: sum(t in items for items in table.values()) for t in TICKERS}
        assert set(counts.values()) == {replicas}


def test_balanced_within_reason() -> None:
    table = assign(TICKERS, ["a", "b", "c"])
    assert all(70 <= len(items) <= 130 for items in table.values())


def test_only_the_leavers_items_move() -> None:
    before = assign(TICKERS, ["a", "b", "c"])
    after = assign(TICKERS, ["a", "b"])
    for member in ("a", "b"):
        assert set(before[member]) <= set(after[member])
    assert set(after["a"]) | set(after["b"]) == set(TICKERS)


def test_mine_counts_self_and_agrees_with_owners() -> None:
    assert mine(TICKERS, ["a", "b"], "c") == [
        t for t in TICKERS if owners(t, ["a", "b", "c"])[0] == "c"
    ]
    assert assign(TICKERS, []) == {}
