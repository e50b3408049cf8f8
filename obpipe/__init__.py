"""obpipe's public Python API: a captured day as pandas tables, from Parquet or CSV.

::

    import obpipe

    tob = obpipe.top_of_book("2026-03-02", "BBCA")  # best bid/ask after every update
    ladder = obpipe.book_at("2026-03-02", "BBCA", "10:15:30")
    prints = obpipe.trades("2026-03-02", "BBCA")

Every function takes ``data_dir=`` (default ``$DATA_DIR``, else ``./data``) and a day, a
``"START..END"`` range or ``start=``/``end=``. The functions need pandas (``pip install
'obpipe[research]'``); they are imported on first use, so ``obpipe export`` and the
end-of-day job, which only need pyarrow, run without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from obpipe.orderbook import book, book_at, gap_mask, top_of_book
    from obpipe.reader import gaps, prices, trades

__all__ = ["book", "book_at", "gap_mask", "gaps", "prices", "top_of_book", "trades"]

_HOMES = {
    "book": "obpipe.orderbook",
    "book_at": "obpipe.orderbook",
    "gap_mask": "obpipe.orderbook",
    "top_of_book": "obpipe.orderbook",
    "gaps": "obpipe.reader",
    "prices": "obpipe.reader",
    "trades": "obpipe.reader",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'obpipe' has no attribute {name!r}")
    try:
        module = importlib.import_module(home)
    except ModuleNotFoundError as exc:
        if exc.name == "pandas":
            raise ModuleNotFoundError(
                "obpipe's reader returns pandas tables: pip install 'obpipe[research]'",
                name="pandas",
            ) from exc
        raise
    return getattr(module, name)
