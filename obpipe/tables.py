"""The typed table of each data set: one Arrow schema, read from CSV or Parquet, written as Parquet.

``finalize_day`` (:mod:`jobs.parquet`), the reader and ``obpipe export`` all go through this
module, so a day read from its CSV and from its Parquet twin is the same table, value for value.

Types, chosen for the tools quants use (pandas, polars, DuckDB):

- times are ``timestamp[us, tz=Asia/Jakarta]``: microseconds, as the files write them; the
  IANA name rather than ``+07:00`` because polars only takes IANA zones (Jakarta has had no
  daylight saving since 1964, so the two are the same clock);
- whole numbers (prices of the book and the tape, rupiah values, levels, orders, seq, trade
  numbers, trade counts) are ``int64``; a CSV cell such as ``8200.0`` is accepted, a
  fractional one refused, never rounded;
- ``lots`` is ``float64``: shares / 100 is fractional for odd lots (the CSV's ``44762.5``);
- the LivePrice figures of ``prices`` (except ``frequency``) are ``float64``: the feed sends
  every one of them as a double, and index levels such as IHSG's are fractional; its
  ``sequence`` (field 19) is ``int64``, null where the message had none;
- ``side``, ``board``, ``cause`` and the ``code`` column are dictionary-encoded strings
  (pandas categoricals); an empty ``side``/``board`` (auctions, negotiated prints) is null.

Every ticker table starts with a ``code`` column, so a glob over many files keeps the ticker.
Gap tables have no code (a gap names its tickers). Nothing here needs a time-zone database:
times are converted with plain arithmetic, since Jakarta is always UTC+7.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.layout import GAPS, ORDERBOOK, PRICES, TRADES

ZONE = "Asia/Jakarta"
"""The time zone of every timestamp column (always UTC+7)."""
TIME = pa.timestamp("us", tz=ZONE)
LABEL = pa.dictionary(pa.int32(), pa.string())
"""Dictionary-encoded text: few distinct values (sides, boards, causes, the ticker)."""
OFFSET_US = 7 * 3_600 * 1_000_000
"""Jakarta's offset from UTC in microseconds (no daylight saving)."""
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3
"""zstd level 3: a little smaller than the default level 1 at about the same read speed
(``python -m bench --only parquet`` measures the files)."""
PARQUET_SUFFIX = ".parquet"

_I = pa.int64()
_F = pa.float64()
_S = pa.string()

SCHEMAS: dict[str, pa.Schema] = {
    ORDERBOOK: pa.schema(
        [
            ("code", LABEL),
            ("timestamp", TIME),
            ("price", _I),
            ("lots", _F),
            ("total_value", _I),
            ("side", LABEL),
            ("level", _I),
            ("orders", _I),
            ("seq", _I),
            ("received_at", TIME),
        ]
    ),
    TRADES: pa.schema(
        [
            ("code", LABEL),
            ("timestamp", TIME),
            ("price", _I),
            ("lots", _F),
            ("total_value", _I),
            ("side", LABEL),
            ("trade_number", _I),
            ("board", LABEL),
            ("received_at", TIME),
        ]
    ),
    PRICES: pa.schema(
        [
            ("code", LABEL),
            ("timestamp", TIME),
            ("price", _F),
            ("open", _F),
            ("high", _F),
            ("low", _F),
            ("prev_close", _F),
            ("lots", _F),
            ("total_value", _F),
            ("frequency", _I),
            ("average", _F),
            ("foreign_buy", _F),
            ("foreign_sell", _F),
            ("received_at", TIME),
            ("sequence", _I),
        ]
    ),
    GAPS: pa.schema(
        [
            ("start", TIME),
            ("end", TIME),
            ("cause", LABEL),
            ("tickers", _S),
            ("ingestor", _S),
            ("detail", _S),
        ]
    ),
}
"""Data set (folder under DATA_DIR) → its typed table."""

_NULL_WHEN_EMPTY = frozenset({"side", "board"})


class TableError(ValueError):
    """A file that does not hold its data set's columns, or a cell of the wrong type."""


def csv_columns(kind: str) -> list[str]:
    """The CSV header of a data set, in order (the schema without ``code``)."""
    return [name for name in SCHEMAS[kind].names if name != "code"]


def _csv_type(kind: str, name: str) -> pa.DataType:
    kind_type = SCHEMAS[kind].field(name).type
    if pa.types.is_timestamp(kind_type):
        # Arrow parses the "+07:00" offset into UTC; the zone is set afterwards.
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_dictionary(kind_type):
        return _S
    return kind_type


def read_csv(path: Path, kind: str, code: str | None = None) -> pa.Table:
    """The typed table of one day file (``.csv`` or ``.csv.gz``); :class:`TableError` if it
    is not the data set's CSV. ``code`` fills the ``code`` column of a ticker file."""
    names = csv_columns(kind)
    header = _header(path)
    # More columns may be added to the files only at the end: read the known ones.
    if header[: len(names)] != names:
        raise TableError(f"{path.name}: header {header[: len(names) + 2]} is not {names}")
    parse = pacsv.ParseOptions(newlines_in_values=kind == GAPS)
    read = pacsv.ReadOptions(use_threads=True, block_size=16 << 20)
    types = {name: _csv_type(kind, name) for name in names}
    try:
        table = _read(path, read, parse, names, types)
    except pa.ArrowInvalid:
        # A whole-number column written as "8200.0" or "1e6": read it as text, convert below.
        text_types = {n: (_S if t == _I else t) for n, t in types.items()}
        try:
            table = _read(path, read, parse, names, text_types)
        except pa.ArrowInvalid as exc:
            raise TableError(f"{path.name}: {exc}") from None
    return _typed(table, kind, code, path.name)


def _header(path: Path) -> list[str]:
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", newline="", encoding="utf-8") as handle:
            line = handle.readline()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise TableError(f"{path.name}: unreadable: {exc}") from None
    return next(csv.reader([line]), [])


def _read(
    path: Path,
    read: Any,
    parse: Any,
    names: list[str],
    types: dict[str, pa.DataType],
) -> pa.Table:
    convert = pacsv.ConvertOptions(
        column_types=types,
        include_columns=names,
        null_values=[""],
        strings_can_be_null=False,
    )
    return pacsv.read_csv(path, read_options=read, parse_options=parse, convert_options=convert)


def _whole(column: pa.ChunkedArray, name: str, where: str) -> pa.ChunkedArray:
    if column.type == _I:
        return column
    try:
        return pc.cast(column, _I)
    except pa.ArrowInvalid:
        pass
    try:
        # safe=True refuses a fraction instead of truncating it.
        return pc.cast(pc.cast(column, _F), _I, safe=True)
    except pa.ArrowInvalid:
        raise TableError(
            f"{where}: column {name!r} holds a value that is not a whole number"
        ) from None


def _typed(table: pa.Table, kind: str, code: str | None, where: str) -> pa.Table:
    schema = SCHEMAS[kind]
    columns: list[pa.ChunkedArray] = []
    for field in schema:
        if field.name == "code":
            columns.append(_repeat(code or "", table.num_rows))
            continue
        column = table.column(field.name)
        if pa.types.is_timestamp(field.type):
            column = column.cast(field.type)
        elif field.type == _I:
            column = _whole(column, field.name, where)
        elif pa.types.is_dictionary(field.type):
            if field.name in _NULL_WHEN_EMPTY:
                column = pc.if_else(pc.equal(column, ""), pa.scalar(None, _S), column)
            column = pc.dictionary_encode(column)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema).combine_chunks()


def _repeat(value: str, count: int) -> pa.ChunkedArray:
    indices = pa.repeat(pa.scalar(0, pa.int32()), count)
    return pa.chunked_array([pa.DictionaryArray.from_arrays(indices, pa.array([value], _S))])


def empty(kind: str) -> pa.Table:
    """A table of ``kind`` with no rows."""
    return SCHEMAS[kind].empty_table()


def read_parquet(
    path: Path, columns: list[str] | None = None, where: pc.Expression | None = None
) -> pa.Table:
    """One Parquet file of the data set (only ``columns``; rows matching ``where``)."""
    # partitioning=None: the file's own "date=..." folder must not become a column here.
    return pq.read_table(path, columns=columns, filters=where, partitioning=None)


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` atomically (hidden temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A leading dot: DuckDB, polars and pyarrow skip it when globbing a half-written folder.
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(
        table,
        tmp,
        compression=COMPRESSION,
        compression_level=COMPRESSION_LEVEL,
        # Pinned rather than pyarrow's default of the day, so an upgrade does not change the
        # format of new files (the manifest's sha256 of existing ones is kept on re-runs).
        version="2.6",
    )
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    tmp.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def canonical(table: pa.Table) -> pa.Table:
    """``table`` with dictionaries decoded and chunks joined: two tables holding the same
    values compare equal in this form whatever their encoding."""
    columns = [
        col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col
        for col in table.columns
    ]
    return pa.Table.from_arrays(columns, names=table.column_names).combine_chunks()


def _time_text(column: pa.ChunkedArray) -> pa.Array:
    # Jakarta wall time by arithmetic (no tz database), written as the files write it. The
    # rows of one snapshot share their times, so each distinct time is formatted once
    # (strftime is the slow part: 40 times faster on a book file).
    encoded = pc.dictionary_encode(column.cast(pa.int64())).combine_chunks()
    local = pc.add(encoded.dictionary, OFFSET_US).cast(pa.timestamp("us"))
    text = pc.strftime(local, format="%Y-%m-%dT%H:%M:%S")
    return pc.take(pc.binary_join_element_wise(text, "+07:00", ""), encoded.indices)


def _cell_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_timestamp(column.type):
        text = _time_text(column)
    elif pa.types.is_dictionary(column.type):
        text = column.cast(column.type.value_type)
    else:
        # Arrow prints floats in their shortest form: 45678.0 → "45678", 0.5 → "0.5".
        text = pc.cast(column, _S)
        if pa.types.is_floating(column.type):
            text = _without_exponent(column, text)
    return pc.fill_null(text, "")


def _without_exponent(column: pa.ChunkedArray, text: pa.ChunkedArray) -> pa.ChunkedArray:
    """Arrow writes large or tiny floats with an exponent (``1.012345e+10``) where the files
    hold plain decimals (``10123450000``, a LivePrice turnover): rewrite just those cells."""
    if not pc.any(pc.match_substring(text, "e")).as_py():
        return text  # the common case (book lots): nothing to rewrite, no Python loop
    cells = [
        _plain_float(value) if cell is not None and "e" in cell else cell
        for value, cell in zip(column.to_pylist(), text.to_pylist(), strict=True)
    ]
    return pa.chunked_array([pa.array(cells, _S)])


def _plain_float(value: float) -> str:
    # The shortest round-trip digits (repr) as a plain decimal, as pipeline.rows writes them.
    plain = format(Decimal(repr(value)), "f")
    return plain.rstrip("0").rstrip(".") if "." in plain else plain


def to_csv(table: pa.Table, kind: str) -> bytes:
    """The CSV text of a typed table, in the files' own format (header, ``+07:00`` times with
    microseconds, shortest numbers): a day's CSV rebuilt from its Parquet twin."""
    names = csv_columns(kind)
    header = (",".join(names) + "\n").encode()
    if table.num_rows == 0:
        return header
    if kind == GAPS:
        # Gap details may hold commas or quotes: let the csv module quote them.
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        cells = [_cell_text(table.column(n)).to_pylist() for n in names]
        writer.writerows(zip(*cells, strict=True))
        return header + out.getvalue().encode()
    text = pa.Table.from_arrays([_cell_text(table.column(n)) for n in names], names=names)
    sink = pa.BufferOutputStream()
    # No cell of a ticker file holds a comma or a quote, so nothing is quoted (as the writer).
    pacsv.write_csv(text, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    body: bytes = sink.getvalue().to_pybytes()
    return header + body
