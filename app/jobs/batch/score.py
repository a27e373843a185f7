"""Scoring a chunk: store features, the model (in slices side by side), rejects with their reasons."""

from __future__ import annotations

import asyncio
import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from app.jobs.batch.store import UserFeatures, store_columns
from app.jobs.validate import UNKNOWN_USER, Checked
from app.model.pool import LoadedModel

_MIN_SLICE = 4096
"""Rows below which a chunk is not worth splitting across inference threads."""


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
    features: UserFeatures | None,
    pool: ThreadPoolExecutor | None = None,
    slices: int = 1,
) -> ChunkResult:
    errors = dict(checked.errors)
    valid = checked.valid
    if model.needs_store and valid.any():
        assert features is not None, "a model with store features is scored with a feature server"
        users = table.column("user_id").combine_chunks()
        if pa.types.is_dictionary(users.type):
            users = users.dictionary_decode()
        users = users.filter(pa.array(valid))
        store, known = await store_columns(features, model, users)
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
