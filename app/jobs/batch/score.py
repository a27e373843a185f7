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
from app.model.answers import BINARY, REGRESSION
from app.model.pool import LoadedModel
from app.model.runtime import Scores

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


def _reject_lines(
    table: pa.Table, start: int, errors: dict[int, list[dict[str, Any]]], as_read: dict[int, Any]
) -> list[bytes]:
    if not errors:
        return []
    rows = sorted(errors)
    values = table.take(pa.array(rows, pa.int64())).to_pylist()
    return [
        orjson.dumps(
            {"row": start + i, "errors": errors[i], "input": as_read.get(i, v)},
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
    return ChunkResult(
        index, start, out, _reject_lines(table, start, errors, checked.inputs), reasons, table.num_rows, kept
    )


def _run_model(
    model: LoadedModel, feeds: dict[str, np.ndarray], pool: ThreadPoolExecutor | None, slices: int
) -> Scores:
    """The model's scores of ``feeds``; with ``pool``, as ``slices`` slices run side by side.

    onnxruntime releases the GIL and every output row depends only on its input
    row, so slices scored in parallel threads give the same values as one run.
    """
    n = len(next(iter(feeds.values())))
    if pool is None or slices < 2 or n < 2 * _MIN_SLICE:
        return model.runtime.scores(feeds)
    bounds = np.linspace(0, n, slices + 1).astype(int)
    parts = [{k: v[lo:hi] for k, v in feeds.items()} for lo, hi in itertools.pairwise(bounds)]
    results = list(pool.map(model.runtime.scores, parts))
    if model.task == REGRESSION:
        return Scores(values=np.concatenate([r.values for r in results if r.values is not None]))
    return Scores(
        labels=np.concatenate([r.labels for r in results if r.labels is not None]),
        probabilities=np.concatenate([r.probabilities for r in results if r.probabilities is not None]),
    )


def output_columns(model: LoadedModel, scores: Scores | None) -> list[tuple[str, pa.Array]]:
    """The answer columns of a task, after the input columns (``scores`` None: no rows).

    Binary and multiclass: ``prediction`` (the label, int64 or string) and
    ``probability`` (positive class / predicted label); multiclass adds
    ``probability_<class>`` per class in the manifest's order. Regression:
    ``prediction`` (float64) only.
    """
    answers = model.answers
    if model.task == REGRESSION:
        values = np.zeros(0) if scores is None or scores.values is None else scores.values
        return [("prediction", pa.array(np.asarray(values, dtype=np.float64)))]
    label_type = pa.string() if answers.string_labels else pa.int64()
    if scores is None:
        pred, prob = pa.array([], label_type), pa.array([], pa.float64())
        matrix = np.zeros((0, len(answers.classes)))
    else:
        labels = answers.labels(scores) if answers.string_labels else np.asarray(scores.labels, dtype=np.int64)
        pred = pa.array(labels, label_type)
        prob = pa.array(np.asarray(answers.label_probability(scores), dtype=np.float64))
        assert scores.probabilities is not None
        matrix = np.asarray(scores.probabilities, dtype=np.float64)
    out = [("prediction", pred), ("probability", prob)]
    if model.task != BINARY:
        out += [(f"probability_{key}", pa.array(matrix[:, i])) for i, key in enumerate(answers.keys)]
    return out


def _infer(
    model: LoadedModel,
    good: pa.Table,
    store: dict[str, np.ndarray],
    pool: ThreadPoolExecutor | None = None,
    slices: int = 1,
) -> pa.Table:
    n = good.num_rows
    scores = _run_model(model, _feeds(model, good, store), pool, slices) if n else None
    out = good
    for name, column in output_columns(model, scores):
        out = out.append_column(name, column)
    version = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([model.version]))
    return out.append_column("model_version", version.dictionary_decode() if n == 0 else version)
