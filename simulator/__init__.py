"""A Stockbit-compatible IDX feed server for demos, tests and benchmarks.

- :mod:`simulator.service`: the command line (``python -m simulator``, ``obpipe simulate``)
- :mod:`simulator.server`: websocket feed + ``GET /auth/websocket/key`` on one port
- :mod:`simulator.session`: one socket's protocol rules (auth, subscribe, ping)
- :mod:`simulator.feed`: the market's schedule and fan-out to subscribers
- :mod:`simulator.link`: one connection's outgoing frames and faults
- :mod:`simulator.market`: books, trades, LivePrice figures and auction phases, pure
  (injected clock and RNG)
- :mod:`simulator.frames`: server-frame bytes (through :mod:`stockbit.wrapper`)
- :mod:`simulator.subscriptions`: ticker → subscribed connections (strict mode: no book
  without its liveprice, iepiev and best_bid_offer companions)
- :mod:`simulator.credentials`: tokens and websocket keys
- :mod:`simulator.clock`: the virtual exchange clock
- :mod:`simulator.journal`: the JSONL record of every data frame sent
- :mod:`simulator.harness`: start one as a subprocess (for tests)
"""
