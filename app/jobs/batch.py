"""``modelserve batch INPUT OUTPUT``: score a file with the same model, rules and features as /predict.

Input: Parquet, CSV or JSONL (by extension) with ``user_id``, the request
features and optionally ``request_id``. Output: Parquet or CSV with those
columns plus ``prediction``, ``probability`` and ``model_version``, in input
order. Rows that fail validation (:mod:`app.jobs.validate`, the decoder's
rules) or whose user is unknown go to the rejects file (JSONL: ``row``, the
0-based input row; ``errors`` in the API's detail shape; ``input``) and are
counted: rows in = rows out + rejects.

The input is read in chunks of ``chunk_rows``; each chunk is validated on
whole columns, its users' store features come from the feature server in one
``get_many``, the model runs once per chunk, and the chunk's output and rejects
are written as part files in ``OUTPUT.parts/``. A chunk counts as done (in
``OUTPUT.parts/checkpoint.json``) once its parts are on disk and, with
``--sink``, all its POSTs succeeded; a rerun after an interruption skips
done chunks, so nothing is written or posted twice. (A chunk whose POSTs
were only partly accepted when the run stopped is sent again under the same
``Idempotency-Key`` values, so a sink that honours them stores it once.) When every chunk is done
the parts are joined into OUTPUT and the rejects file, and the directory is
removed. A checkpoint from a different input, model or chunk size is
discarded (the job starts over) and says so.

Work is overlapped: the next chunk is read and validated in a thread while
the current one is scored, parts are written by a writer thread, and POSTs
of earlier chunks proceed while later chunks are scored.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from app.errors import ModelServeError
from app.jobs.validate import (
    UNKNOWN_USER,
    Checked,
    check_columns,
    convert_csv_table,
    merge,
    validate_table,
)
from app.model.manifest import Manifest
from app.model.pool import LoadedModel, ModelPool
from app.model.repository import Repository
from app.settings import Settings

if TYPE_CHECKING:
    from app.jobs.sink import Sink

INPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
OUTPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
CHECKPOINT = "checkpoint.json"
_MIN_SLICE = 4096
"""Rows below which a chunk is not worth splitting across inference threads."""
_ARROW = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_(), "string": pa.string()}


class BatchError(ModelServeError):
    pass


@dataclass
class BatchOptions:
    input: Path
    output: Path
    version: str | None = None
    rejects: Path | None = None
    chunk_rows: int = 100_000
    threads: int = 1
    slices: int | None = None
    """Inference threads per chunk (``None``: one per CPU, up to 2, when ``threads`` is 1)."""
    sink: str | None = None
    sink_batch: int = 1000
    sink_concurrency: int = 32
    sink_retries: int = 6
    restart: bool = False
    progress: bool = True


@dataclass
class Summary:
    rows_in: int = 0
    rows_out: int = 0
    rejected: int = 0
    chunks: int = 0
    chunks_skipped: int = 0
    posts: int = 0
    post_retries: int = 0
    seconds: float = 0.0
    output: Path | None = None
    rejects: Path | None = None
    version: str = ""
    reasons: dict[str, int] = field(default_factory=dict)

    def render(self) -> str:
        rate = self.rows_in / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"scored {self.rows_in:,} rows with {self.version} in {self.seconds:.2f} s ({rate:,.0f} rows/s): "
            f"{self.rows_out:,} written to {self.output}, {self.rejected:,} rejected"
            + (f" (see {self.rejects})" if self.rejected else ""),
        ]
        if self.chunks_skipped:
            lines.append(f"resumed: {self.chunks_skipped} of {self.chunks} chunks were done by an earlier run")
        if self.posts or self.post_retries:
            lines.append(f"sink: {self.posts} POSTs, {self.post_retries} retries")
        for reason, n in sorted(self.reasons.items(), key=lambda kv: -kv[1])[:5]:
            lines.append(f"  {n:>9,}  {reason}")
        return "\n".join(lines)


# --- reading ---------------------------------------------------------------
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
    fields = [pa.field("user_id", pa.string())] if manifest.store_features else []
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
        check_columns(pf.schema_arrow.names, manifest)
        for table in _rechunk(pf.iter_batches(batch_size=min(rows, 65536)), rows):
            yield table, validate_table(table, manifest)
    elif fmt == "csv":
        try:
            names_all = pacsv.open_csv(path).schema.names
        except (OSError, pa.ArrowException) as exc:
            raise BatchError(f"cannot read {path}: {exc}") from None
        check_columns(names_all, manifest)
        reader = pacsv.open_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names_all}, strings_can_be_null=True
            ),
        )
        for table in _rechunk(iter(reader), rows):
            converted, conversion = convert_csv_table(table, manifest)
            yield converted, merge(validate_table(converted, manifest), conversion)
    else:
        yield from _jsonl_chunks(path, rows, model)


def _jsonl_chunks(path: Path, rows: int, model: LoadedModel) -> Iterator[tuple[pa.Table, Checked]]:
    """JSONL rows go through the decoder itself, one by one (flat rows or /predict bodies)."""
    from app.errors import ValidationFailed

    schema = _jsonl_schema(model.manifest)
    decoder = model.decoder
    with open(path, "rb") as f:
        while True:
            lines = [line for line in (f.readline() for _ in range(rows)) if line]
            if not lines:
                return
            good: list[dict[str, Any]] = []
            valid = np.zeros(len(lines), dtype=bool)
            errors: dict[int, list[dict[str, Any]]] = {}
            for i, line in enumerate(lines):
                try:
                    obj = orjson.loads(line)
                    if not isinstance(obj, dict):
                        raise ValueError("not an object")
                except ValueError:
                    errors[i] = [{"loc": [], "msg": "Invalid JSON object", "type": "json_invalid"}]
                    continue
                instance = obj if isinstance(obj.get("features"), dict) else _nest(obj)
                try:
                    d = decoder.validate_python(instance)
                except ValidationFailed as exc:
                    errors[i] = exc.detail
                    continue
                valid[i] = True
                good.append({"user_id": d.user_id, "request_id": d.request_id, **d.features})
            columns = {name: [row.get(name) for row in good] for name in schema.names}
            table_all = pa.table(columns, schema=schema)
            # Put invalid rows back as empty rows so positions line up with ``valid``.
            full = _scatter(table_all, valid)
            yield full, Checked(valid, errors)


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


# --- scoring -----------------------------------------------------------------
@dataclass
class ChunkResult:
    index: int
    start: int
    output: pa.Table
    rejects: list[bytes]
    reasons: dict[str, int]
    rows_in: int
    kept: np.ndarray
    """Input row numbers of the output rows."""


async def _store_columns(
    features: Any, model: LoadedModel, users: pa.Array
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Store feature columns for ``users`` and a mask of the users the feature server knows.

    One hashing pass (``dictionary_encode``) gives the distinct users and each
    row's position among them; the feature values are laid out per distinct
    user once and spread to the rows with one NumPy ``take`` per column, so
    string values are shared, not copied per row.
    """
    encoded = pc.dictionary_encode(users)
    unique = encoded.dictionary.to_pylist()
    rows = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.intp)
    found = await features.get_many(unique)
    known = np.fromiter((u in found for u in unique), dtype=bool, count=len(unique))
    entries = [found.get(u) for u in unique]
    columns: dict[str, np.ndarray] = {}
    numeric = {f.name for f in model.manifest.features if f.dtype != "string"}
    for name in model.store_features:
        if name in numeric:
            values = np.array([e[0][name] if e is not None else np.nan for e in entries], dtype=np.float64)
        else:
            values = np.empty(len(entries), dtype=object)
            values[:] = [e[0][name] if e is not None else None for e in entries]
        columns[name] = values[rows] if len(values) else np.full(len(users), np.nan if name in numeric else None)
    return columns, known[rows] if len(known) else np.zeros(len(users), dtype=bool)


def _column_numpy(a: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A column as NumPy; strings without nulls as one shared object per distinct value."""
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    if pa.types.is_string(a.type) and a.null_count == 0:
        a = pc.dictionary_encode(a)
    if pa.types.is_dictionary(a.type) and a.null_count == 0:
        values = np.empty(len(a.dictionary), dtype=object)
        values[:] = a.dictionary.to_pylist()
        return values[np.asarray(a.indices.to_numpy(zero_copy_only=False), dtype=np.intp)]
    if pa.types.is_dictionary(a.type):
        a = a.dictionary_decode()
    return a.to_numpy(zero_copy_only=False)


def _feeds(model: LoadedModel, table: pa.Table, store: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    columns: dict[str, Any] = dict(store)
    for f in model.manifest.request_features:
        columns[f.name] = _column_numpy(table.column(f.name))
    return model.runtime.feeds_from_columns(columns)


def _reject_lines(table: pa.Table, start: int, errors: dict[int, list[dict[str, Any]]]) -> list[bytes]:
    if not errors:
        return []
    rows = sorted(errors)
    values = table.take(pa.array(rows, pa.int64())).to_pylist()
    return [
        orjson.dumps(
            {"row": start + i, "errors": errors[i], "input": v},
            option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY,
            default=str,
        )
        for i, v in zip(rows, values, strict=True)
    ]


async def score_chunk(
    index: int,
    start: int,
    table: pa.Table,
    checked: Checked,
    model: LoadedModel,
    features: Any,
    pool: ThreadPoolExecutor | None = None,
    slices: int = 1,
) -> ChunkResult:
    errors = dict(checked.errors)
    valid = checked.valid
    if model.needs_store and valid.any():
        users = table.column("user_id").combine_chunks()
        if pa.types.is_dictionary(users.type):
            users = users.dictionary_decode()
        users = users.filter(pa.array(valid))
        store, known = await _store_columns(features, model, users)
        if not known.all():
            valid_idx = np.flatnonzero(valid)
            for i in valid_idx[~known].tolist():
                errors[i] = [dict(UNKNOWN_USER)]
            valid = valid.copy()
            valid[valid_idx[~known]] = False
            store = {k: v[known] for k, v in store.items()}
    else:
        store = {}
    good = table.filter(pa.array(valid)) if not valid.all() else table
    out = await asyncio.to_thread(_infer, model, good, store, pool, slices)
    reasons: dict[str, int] = {}
    for errs in errors.values():
        for e in errs:
            key = f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
            reasons[key] = reasons.get(key, 0) + 1
    kept = start + np.flatnonzero(valid)
    return ChunkResult(index, start, out, _reject_lines(table, start, errors), reasons, table.num_rows, kept)


def _run_model(model: LoadedModel, feeds: dict[str, np.ndarray], pool: ThreadPoolExecutor | None, slices: int) -> Any:
    """(labels, probabilities) of ``feeds``; with ``pool``, as ``slices`` slices run side by side.

    onnxruntime releases the GIL and every output row depends only on its input
    row, so slices scored in parallel threads give the same values as one run.
    """
    n = len(next(iter(feeds.values())))
    if pool is None or slices < 2 or n < 2 * _MIN_SLICE:
        return model.runtime.run(feeds)
    bounds = np.linspace(0, n, slices + 1).astype(int)
    parts = [{k: v[lo:hi] for k, v in feeds.items()} for lo, hi in itertools.pairwise(bounds)]
    results = list(pool.map(model.runtime.run, parts))
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


def _infer(
    model: LoadedModel,
    good: pa.Table,
    store: dict[str, np.ndarray],
    pool: ThreadPoolExecutor | None = None,
    slices: int = 1,
) -> pa.Table:
    n = good.num_rows
    if n:
        labels, probs = _run_model(model, _feeds(model, good, store), pool, slices)
        pred = pa.array(np.asarray(labels, dtype=np.int64))
        prob = pa.array(np.asarray(probs, dtype=np.float64))
    else:
        pred, prob = pa.array([], pa.int64()), pa.array([], pa.float64())
    version = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([model.version]))
    out = good.append_column("prediction", pred).append_column("probability", prob)
    return out.append_column("model_version", version.dictionary_decode() if n == 0 else version)


# --- parts, checkpoint and the final files ----------------------------------
class Parts:
    """Durable per-chunk parts (Arrow IPC, cheap to write) + the final file, written in chunk order.

    The final output is streamed as chunks arrive (no second pass on a clean
    run); on a resumed run the parts of chunks done earlier are streamed into
    it again, in their place, so the final file is always written in order
    from start to end.
    """

    def __init__(self, output: Path, fmt: str, identity: dict[str, Any], restart: bool) -> None:
        self.dir = output.with_name(output.name + ".parts")
        self.fmt = fmt
        self.identity = identity
        self.done: dict[int, dict[str, int]] = {}
        self.discarded = False
        path = self.dir / CHECKPOINT
        if path.is_file() and not restart:
            state = orjson.loads(path.read_bytes())
            if state.get("identity") == identity:
                self.done = {int(k): v for k, v in state.get("done", {}).items()}
            else:
                self.discarded = True
        if (restart or self.discarded) and self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.final = self.dir / f"output.{'parquet' if fmt == 'parquet' else 'csv'}.tmp"
        self._parquet: pq.ParquetWriter | None = None
        self._csv: Any = None
        self._schema: pa.Schema | None = None

    def part(self, index: int) -> Path:
        return self.dir / f"part-{index:06d}.arrow"

    def rejects(self, index: int) -> Path:
        return self.dir / f"rejects-{index:06d}.jsonl"

    def write(self, result: ChunkResult) -> None:
        """Make the chunk durable, then append it to the final file (io thread, chunk order)."""
        part = self.part(result.index)
        tmp = part.with_name(part.name + ".tmp")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, result.output.schema) as writer:
            writer.write_table(result.output)
        rej = self.rejects(result.index)
        tmp_rej = rej.with_name(rej.name + ".tmp")
        tmp_rej.write_bytes(b"".join(result.rejects))
        os.replace(tmp_rej, rej)
        os.replace(tmp, part)
        self._append(result.output)

    def replay(self, index: int) -> None:
        """Append a chunk done by an earlier run to the final file (io thread, chunk order)."""
        with pa.memory_map(str(self.part(index)), "r") as source:
            self._append(pa.ipc.open_file(source).read_all())

    def _append(self, table: pa.Table) -> None:
        if self._schema is None:
            self._schema = table.schema
            if self.fmt == "parquet":
                # Dictionary pages only for text columns: a number column rarely repeats enough
                # to keep one, and building it first then falling back doubles the write cost.
                text = [
                    f.name
                    for f in table.schema
                    if pa.types.is_dictionary(f.type) or pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                ]
                self._parquet = pq.ParquetWriter(self.final, table.schema, compression="snappy", use_dictionary=text)
            else:
                self._csv = pacsv.CSVWriter(str(self.final), _csv_ready(table).schema)
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        if self._parquet is not None:
            self._parquet.write_table(table)
        elif self._csv is not None:
            self._csv.write_table(_csv_ready(table))

    def mark_done(self, result: ChunkResult) -> None:
        self.done[result.index] = {
            "rows_in": result.rows_in,
            "rows_out": result.output.num_rows,
            "rejected": len(result.rejects),
        }
        state = {"identity": self.identity, "done": {str(k): v for k, v in sorted(self.done.items())}}
        tmp = self.dir / (CHECKPOINT + ".tmp")
        tmp.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.dir / CHECKPOINT)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
        if self._csv is not None:
            self._csv.close()
            self._csv = None

    def finish(self, count: int, output: Path, rejects: Path) -> None:
        """Move the final file into place, join the rejects, remove the parts."""
        self.close()
        if self._schema is None:  # an empty input
            pq.write_table(pa.table({}), self.final) if self.fmt == "parquet" else self.final.write_bytes(b"")
        tmp_rej = rejects.with_name(f".{rejects.name}.tmp-{os.getpid()}")
        with open(tmp_rej, "wb") as out:
            for i in range(count):
                with open(self.rejects(i), "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        os.replace(self.final, output)
        os.replace(tmp_rej, rejects)
        shutil.rmtree(self.dir)


def _csv_ready(table: pa.Table) -> pa.Table:
    cols = []
    for col in table.columns:
        cols.append(col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col)
    return pa.table(cols, names=table.column_names)


def _identity(path: Path, version: str, options: BatchOptions) -> dict[str, Any]:
    st = path.stat()
    return {
        "input": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "version": version,
        "chunk_rows": options.chunk_rows,
        "sink": options.sink,
        "sink_batch": options.sink_batch,
    }


def _sink_items(run_id: str, result: ChunkResult, start_rows: np.ndarray, size: int) -> list[tuple[str, Any]]:
    out = result.output
    cols = [c for c in ("user_id", "request_id") if c in out.column_names]
    data = {c: out.column(c).to_pylist() for c in cols}
    preds = out.column("prediction").to_pylist()
    probs = out.column("probability").to_pylist()
    version = out.column("model_version")[0].as_py() if out.num_rows else None
    rows = start_rows.tolist()
    items = []
    for part, lo in enumerate(range(0, out.num_rows, size)):
        hi = min(lo + size, out.num_rows)
        payload = {
            "chunk": result.index,
            "part": part,
            "model_version": version,
            "rows": [
                {"row": rows[i], **{c: data[c][i] for c in cols}, "prediction": preds[i], "probability": probs[i]}
                for i in range(lo, hi)
            ],
        }
        items.append((f"{run_id}-{result.index}-{part}", payload))
    return items


# --- the job -------------------------------------------------------------------
def run_batch(settings: Settings, options: BatchOptions) -> Summary:
    return asyncio.run(_run(settings, options))


async def _run(settings: Settings, options: BatchOptions) -> Summary:
    began = time.perf_counter()
    fmt_in = input_format(options.input)
    fmt_out = OUTPUT_FORMATS.get(options.output.suffix.lower())
    if fmt_out is None:
        raise BatchError(f"cannot write {options.output.name}: use .parquet or .csv")
    if options.chunk_rows < 1 or options.sink_batch < 1 or options.sink_concurrency < 1:
        raise BatchError("--chunk-rows, --sink-batch and --sink-concurrency must be positive")
    rejects_path = options.rejects or options.output.with_name(options.output.name + ".rejects.jsonl")
    repository = Repository(settings.models_dir)
    version = repository.resolve(options.version or settings.alias)
    pool = ModelPool(repository, intra_op_threads=max(1, options.threads), warmup_iterations=1)
    model = await asyncio.to_thread(pool.load, version)
    features = None
    if model.needs_store:
        from app.features.build import build_feature_server
        from app.telemetry.metrics import Metrics

        # A batch may look up thousands of users at once: give the bulk fetch time.
        s = settings.model_copy(update={"feature_budget_ms": max(settings.feature_budget_ms, 60_000.0)})
        features = await asyncio.to_thread(build_feature_server, s, Metrics(), model.store_features)
    identity = _identity(options.input, version, options)
    run_id = hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    options.output.parent.mkdir(parents=True, exist_ok=True)
    parts = Parts(options.output, fmt_out, identity, options.restart)
    if parts.discarded:
        print("note: a checkpoint of a different run was discarded; starting over", file=sys.stderr)
    summary = Summary(output=options.output, rejects=rejects_path, version=version)
    if options.sink:
        from app.jobs.sink import Sink  # httpx only when posting
    sink = (
        Sink(options.sink, concurrency=options.sink_concurrency, retries=options.sink_retries) if options.sink else None
    )
    total = pq.ParquetFile(options.input).metadata.num_rows if fmt_in == "parquet" else None
    bar = _progress(total, options.progress)
    io_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-io")
    slices = _slices(options)
    infer_pool = ThreadPoolExecutor(max_workers=slices, thread_name_prefix="batch-infer") if slices > 1 else None
    pending: list[asyncio.Future[None]] = []
    loop = asyncio.get_running_loop()
    count = 0
    try:
        async for index, start, table, checked in _prefetched(options.input, fmt_in, options.chunk_rows, model):
            count = index + 1
            summary.chunks = count
            done = parts.done.get(index)
            if done is not None:
                pending.append(asyncio.ensure_future(loop.run_in_executor(io_pool, parts.replay, index)))
                summary.chunks_skipped += 1
                summary.rows_in += done["rows_in"]
                summary.rows_out += done["rows_out"]
                summary.rejected += done["rejected"]
                bar.update(table.num_rows)
                continue
            result = await score_chunk(index, start, table, checked, model, features, infer_pool, slices)
            summary.rows_in += result.rows_in
            summary.rows_out += result.output.num_rows
            summary.rejected += len(result.rejects)
            for k, v in result.reasons.items():
                summary.reasons[k] = summary.reasons.get(k, 0) + v
            written = loop.run_in_executor(io_pool, parts.write, result)
            items = []
            if sink is not None:
                items = _sink_items(run_id, result, result.kept, options.sink_batch)
            pending.append(asyncio.create_task(_complete(parts, result, written, sink, items)))
            bar.update(table.num_rows)
            while len(pending) > 2:  # bound memory: at most a few chunks in flight
                await pending.pop(0)
        for task in pending:
            await task
        pending.clear()
        await loop.run_in_executor(io_pool, parts.finish, count, options.output, rejects_path)
    finally:
        # Let chunks already in flight finish (and be checkpointed) even when one failed;
        # only an interrupt (cancellation) abandons them.
        await asyncio.gather(*pending, return_exceptions=True)
        bar.close()
        io_pool.shutdown(wait=True)
        if infer_pool is not None:
            infer_pool.shutdown(wait=True)
        parts.close()
        if sink is not None:
            summary.posts, summary.post_retries = sink.posts, sink.retried
            await sink.close()
        if features is not None:
            await features.close()
    summary.seconds = time.perf_counter() - began
    return summary


def _slices(options: BatchOptions) -> int:
    if options.slices is not None:
        return max(1, options.slices)
    return max(1, min(os.cpu_count() or 1, 2)) if options.threads <= 1 else 1


async def _complete(parts: Parts, result: ChunkResult, written: Any, sink: Sink | None, items: list[Any]) -> None:
    if sink is not None:
        await asyncio.gather(written, sink.post_all(items))
    else:
        await written
    parts.mark_done(result)


async def _prefetched(
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


class _NoBar:
    def update(self, n: int) -> None:
        return None

    def close(self) -> None:
        return None


def _progress(total: int | None, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="rows", unit_scale=True, desc="batch", file=sys.stderr, disable=None)
