"""The end-of-day process: the RQ worker and its jobs (finalize, manifest), and the one way to
enqueue them. Nothing here imports ``writer``."""
