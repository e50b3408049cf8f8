"""The ingestor process: Stockbit websocket session(s) → Redis Streams.

- :mod:`ingestor.credentials`: token, user id and WS key for each connection
- :mod:`ingestor.protocol`: the feed's state machine, sans-I/O (frames and clock in, events out)
- :mod:`ingestor.session`: one websocket session, the thin shell around the protocol
- :mod:`ingestor.entries`: frames packed into stream entries (the hot path)
- :mod:`ingestor.sink`: bounded buffer and batched writes to Redis, gaps, dead letters
- :mod:`ingestor.roster`: heartbeat, membership and which tickers are this ingestor's
- :mod:`ingestor.gaps`, :mod:`ingestor.backoff`: pure bookkeeping
- :mod:`ingestor.service`: wiring, reconnect loop, signals, ``run_ingestor(settings, …)``
"""
