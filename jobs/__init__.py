"""The end-of-day process: the RQ worker and its jobs (finalize, manifest), and the one way to
enqueue them; and ``obpipe replay`` (:mod:`jobs.replay`), which rebuilds a day's files from the
raw archive. Nothing here imports ``writer``."""
