"""The Stockbit market-data wire protocol, pure: bytes ↔ typed values, no I/O, clock or logging.

- :mod:`stockbit.request`: client frames (auth, subscribe, ping)
- :mod:`stockbit.wrapper`: server frames (order book, trades, live price, error, pong; the
  code alone of IEP/IEV and best bid/offer, whose other fields are unattested)
- :mod:`stockbit.book`: the order-book body grammar
- :mod:`stockbit.timestamps`: ISO-8601 and protobuf times
- :mod:`stockbit.token`: unverified JWT claims (user id, expiry)

Every decoder raises :class:`ProtocolError` and nothing else on malformed input.
"""

from stockbit.errors import ProtocolError

__all__ = ["ProtocolError"]
