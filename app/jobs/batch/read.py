"""Reading the input: fixed-size chunks, each validated on whole columns, read one ahead in a thread."""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from app.errors import ValidationFailed
from app.jobs.batch.options import INPUT_FORMATS, BatchError
from app.jobs.validate import Checked, check_columns, convert_csv_table, merge, validate_table
from app.model.manifest import Manifest
from app.model.pool import LoadedModel

_NOT_UTF8 = "Input should be a valid string, unable to parse raw data as a unicode string"
_ARROW = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_(), "string": pa.string()}


def input_format(path: Path) -> str:
    fmt = INPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise BatchError(f"cannot read {path.name}: use .parquet, .csv or .jsonl")
    if not path.is_file():
        raise BatchError(f"input {path} does not exist")
    return fmt


def _rechunk(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Fixed-size tables out of batches of any size (chunk boundaries must not depend on the reader)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == rows:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending)


def _jsonl_schema(manifest: Manifest) -> pa.Schema:
    # user_id always, as request_id: a CSV or Parquet input keeps its user_id column whatever the model
    fields = [pa.field("user_id", pa.string())]
    fields += [pa.field(f.name, _ARROW[f.dtype]) for f in manifest.request_features]
    return pa.schema([*fields, pa.field("request_id", pa.string())])


def read_chunks(path: Path, fmt: str, rows: int, model: LoadedModel) -> Iterator[tuple[pa.Table, Checked]]:
    """(valid-typed chunk, its validation) for every chunk of the input, in order."""
    manifest = model.manifest
    if fmt == "parquet":
        try:
            pf = pq.ParquetFile(path)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise BatchError(f"cannot read {path}: {exc}") from None
        columns = data_columns(pf.schema_arrow)
        check_columns(columns, manifest)
        for table in _rechunk(pf.iter_batches(batch_size=min(rows, 65536), columns=columns), rows):
            yield table, validate_table(table, manifest)
    elif fmt == "csv":
        try:
            names_all = pacsv.open_csv(path).schema.names
        except (OSError, pa.ArrowException) as exc:
            raise BatchError(f"cannot read {path}: {exc}") from None
        check_columns(names_all, manifest)
        # Cells as bytes: a cell that is not UTF-8 is its row's reject (a string column stopped the whole run).
        reader = pacsv.open_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.binary() for n in names_all}, strings_can_be_null=True
            ),
        )
        for raw in _rechunk(iter(reader), rows):
            table, undecodable = _utf8(raw)
            converted, conversion = convert_csv_table(table, manifest)
            checked = merge(merge(validate_table(converted, manifest), conversion), undecodable)
            checked.inputs = _as_read(raw, checked.errors)
            yield converted, checked
    else:
        yield from _jsonl_chunks(path, rows, model)


def data_columns(schema: pa.Schema) -> list[str]:
    """A Parquet file's columns less the DataFrame index pandas stored beside them.

    ``DataFrame.to_parquet`` writes any index but a plain ``RangeIndex`` as
    columns (``__index_level_0__`` or the index's name) and lists them in the
    file's pandas metadata: a holdout taken with ``train_test_split`` has one.
    It is the frame's row labels, not a model input, so it is not read.
    """
    meta = schema.pandas_metadata or {}
    index = {c for c in meta.get("index_columns", ()) if isinstance(c, str)}  # a RangeIndex is a dict, not stored
    return [n for n in schema.names if n not in index]


def _utf8(table: pa.Table) -> tuple[pa.Table, Checked | None]:
    """CSV cells read as bytes, as text; a cell that is not UTF-8 is nulled and its row refused, naming it."""
    try:
        return table.cast(pa.schema([pa.field(n, pa.string()) for n in table.column_names])), None
    except pa.ArrowInvalid:  # rare: find the cells one by one
        pass
    columns = {}
    errors: dict[int, list[dict[str, Any]]] = {}
    valid = np.ones(table.num_rows, dtype=bool)
    for name in table.column_names:
        texts: list[str | None] = []
        loc = [name] if name in ("user_id", "request_id") else ["features", name]
        for i, cell in enumerate(table.column(name).to_pylist()):
            try:
                texts.append(None if cell is None else cell.decode("utf-8"))
            except UnicodeDecodeError:
                texts.append(None)
                valid[i] = False
                errors.setdefault(i, []).append({"loc": loc, "msg": _NOT_UTF8, "type": "string_unicode"})
        columns[name] = pa.array(texts, pa.string())
    return pa.table(columns), Checked(valid, errors)


def _as_read(raw: pa.Table, errors: dict[int, list[dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    """The refused rows' cells as the file has them (bytes that are not UTF-8 escaped), for the rejects file."""
    if not errors:
        return {}
    rows = sorted(errors)
    values = raw.take(pa.array(rows, pa.int64())).to_pylist()
    return {
        i: {k: None if v is None else v.decode("utf-8", "backslashreplace") for k, v in row.items()}
        for i, row in zip(rows, values, strict=True)
    }


def _jsonl_chunks(path: Path, rows: int, model: LoadedModel) -> Iterator[tuple[pa.Table, Checked]]:
    """JSONL rows go through the decoder itself, one by one (flat rows or /predict bodies)."""
    schema = _jsonl_schema(model.manifest)
    decoder = model.decoder
    with open(path, "rb") as f:
        for lines in _jsonl_lines(f, rows):
            good: list[dict[str, Any]] = []
            valid = np.zeros(len(lines), dtype=bool)
            errors: dict[int, list[dict[str, Any]]] = {}
            as_read: dict[int, Any] = {}  # refused rows as the file has them: their table rows are empty
            for i, line in enumerate(lines):
                try:
                    obj = orjson.loads(line)
                    if not isinstance(obj, dict):
                        raise ValueError("not an object")
                except ValueError:
                    errors[i] = [{"loc": [], "msg": "Invalid JSON object", "type": "json_invalid"}]
                    as_read[i] = line.decode("utf-8", "backslashreplace").rstrip("\r\n")
                    continue
                instance = obj if isinstance(obj.get("features"), dict) else _nest(obj)
                try:
                    d = decoder.validate_python(instance)
                except ValidationFailed as exc:
                    errors[i] = exc.detail
                    as_read[i] = obj
                    continue
                valid[i] = True
                good.append({"user_id": d.user_id, "request_id": d.request_id, **d.features})
            columns = {name: [row.get(name) for row in good] for name in schema.names}
            table_all = pa.table(columns, schema=schema)
            # Put invalid rows back as empty rows so positions line up with ``valid``.
            full = _scatter(table_all, valid)
            yield full, Checked(valid, errors, as_read)


def _jsonl_lines(f: BinaryIO, rows: int) -> Iterator[list[bytes]]:
    """The file's lines ``rows`` at a time, without a leading UTF-8 byte order mark and without blank lines.

    A file saved with a byte order mark had its first row rejected as invalid
    JSON, and each blank line (between rows, or at the end) counted as a
    rejected row. Row numbers count the lines that are not blank.
    """
    batch: list[bytes] = []
    for n, line in enumerate(f):
        if n == 0 and line.startswith(codecs.BOM_UTF8):
            line = line[len(codecs.BOM_UTF8) :]
        if line.strip():
            batch.append(line)
            if len(batch) == rows:
                yield batch
                batch = []
    if batch:
        yield batch


def _nest(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"features": {k: v for k, v in obj.items() if k not in ("user_id", "request_id")}}
    for k in ("user_id", "request_id"):
        if k in obj:
            out[k] = obj[k]
    return out


def _scatter(table: pa.Table, valid: np.ndarray) -> pa.Table:
    if valid.all():
        return table
    index = np.full(len(valid), -1, dtype=np.int64)
    index[valid] = np.arange(int(valid.sum()))
    idx = pa.array(index, mask=~valid)
    return table.take(idx)


async def prefetched(
    path: Path, fmt: str, rows: int, model: LoadedModel
) -> AsyncIterator[tuple[int, int, pa.Table, Checked]]:
    """Chunks read and validated one ahead, in a thread, while the caller scores the current one."""
    chunks = read_chunks(path, fmt, rows, model)
    end: Any = object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-read") as reader:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(reader, next, chunks, end)
        index = start = 0
        while True:
            item = await future
            if item is end:
                return
            future = loop.run_in_executor(reader, next, chunks, end)
            table: pa.Table = item[0]
            checked: Checked = item[1]
            yield index, start, table, checked
            index += 1
            start += table.num_rows
