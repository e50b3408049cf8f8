"""Who does what: rendezvous (highest-random-weight) hashing of items over live members (pure).

Used twice with the same rule: ingestors share the desired tickers (each ticker to
``replicas`` ingestors), writers share the partitions (each to exactly one). When a member
joins or leaves, only the items it gains or held move.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence


def _weight(member: str, item: str) -> int:
    digest = hashlib.blake2b(f"{member}\x00{item}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owners(item: str, members: Sequence[str], replicas: int = 1) -> list[str]:
    """The ``replicas`` members that own ``item``, highest weight first."""
    ranked = sorted(members, key=lambda m: _weight(m, item), reverse=True)
    return ranked[: max(1, replicas)]


def assign(items: Iterable[str], members: Sequence[str], replicas: int = 1) -> dict[str, list[str]]:
    """Map every member to the items it owns (members with nothing get an empty list)."""
    table: dict[str, list[str]] = {m: [] for m in members}
    if not members:
        return table
    for item in items:
        for member in owners(item, members, replicas):
            table[member].append(item)
    return table


def mine(items: Iterable[str], members: Sequence[str], me: str, replicas: int = 1) -> list[str]:
    """The items ``me`` owns (``me`` is counted as a member even if not yet listed)."""
    everyone = list(members) if me in members else [*members, me]
    return [item for item in items if me in owners(item, everyone, replicas)]
