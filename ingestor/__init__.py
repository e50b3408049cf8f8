"""The ingestor process: Stockbit websocket session(s) → Redis Streams.

- :mod:`ingestor.credentials`: token, user id and WS key for each connection
- :mod:`ingestor.tokens`: the token store (access + refresh token, one JSON file, 0600, atomic)
- :mod:`ingestor.refresher`: renewing the access token, one ingestor at a time (Redis lock)
- :mod:`ingestor.handover`: moving the socket to a renewed token, make-before-break
- :mod:`ingestor.tokenctl`: ``obpipe token set`` / ``obpipe token status``
- :mod:`ingestor.protocol`: the feed's state machine, sans-I/O (frames and clock in, events out)
- :mod:`ingestor.session`: one websocket session, the thin shell around the protocol
- :mod:`ingestor.entries`: frames packed into stream entries (the hot path)
- :mod:`ingestor.sink`: bounded buffer and batched writes to Redis, gaps, dead letters
- :mod:`ingestor.archive`: every received frame kept on disk (raw archive, for ``obpipe replay``)
- :mod:`ingestor.roster`: heartbeat, membership and which tickers are this ingestor's
- :mod:`ingestor.gaps`, :mod:`ingestor.backoff`: pure bookkeeping
- :mod:`ingestor.service`: wiring, reconnect loop, signals, ``run_ingestor(settings, …)``
"""
