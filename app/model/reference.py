"""Reference distributions: how training data is binned, and how new data is.

The manifest stores one spec per feature and one for the prediction; drift
detection compares new data against them with :func:`histogram`, so the
binning rule lives only here.

Numeric spec::

    {"kind": "numeric", "edges": [e0, ..., ek], "freqs": [f0, ..., fk+1], "null_freq": p}

``edges`` are inner cut points, strictly increasing: for a feature, the
unique deciles of its non-null training values (``numpy.quantile`` with
``method="lower"``, so each edge is an observed value, and at most 9 edges);
for a binary model's predicted probability, the fixed 0.1, 0.2, …, 0.9; for a
regression model's predicted value, the deciles of the holdout predictions.
A multiclass model's prediction reference is categorical over its classes
(as strings), of the predicted labels.

A value ``x`` falls in bin ``numpy.searchsorted(edges, x, side="left")``:
bin 0 holds ``x <= e0``, bin i holds ``edges[i-1] < x <= edges[i]``, the
last bin holds ``x > ek``; there are ``len(edges) + 1`` bins.

Categorical spec (strings, and bools as ``["false", "true"]``)::

    {"kind": "categorical", "categories": [...], "freqs": [...],
     "other_freq": q, "null_freq": p}

``freqs[i]`` is the share of ``categories[i]``; ``other_freq`` the share of
values outside the known categories.

In both kinds the frequencies are fractions of the *non-null* values (so
``freqs`` plus ``other_freq`` sum to 1 when there are any), and ``null_freq``
is the fraction of all values that are null (None, NaN, or pandas' NA and
NaT). With no non-null values every frequency is 0.

Only numpy is needed here: the drift job bins logged values with it in an
install without pandas; a pandas Series (from publishing) is read through its
own ``isna``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

PREDICTION_EDGES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def category_label(value: Any) -> str:
    """The category a value counts as: bools are ``"false"``/``"true"``, the rest ``str``."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    return str(value)


def histogram(values: Iterable[Any], spec: Mapping[str, Any]) -> tuple[list[float], float]:
    """Frequencies of ``values`` against ``spec``: ``(freqs, null_freq)``.

    ``values`` may be any iterable (a list of JSON values, a numpy array, a
    pandas Series). For a categorical spec, the share outside the known
    categories is :func:`other_freq` of the result.
    """
    present, count = _present(values)
    null_freq = (count - len(present)) / count if count else 0.0
    if spec["kind"] == "numeric":
        edges = np.asarray(spec["edges"], dtype=np.float64)
        bins = np.searchsorted(edges, np.asarray(present, dtype=np.float64), side="left")
        counts = np.bincount(bins, minlength=len(edges) + 1)
    elif spec["kind"] == "categorical":
        seen = Counter(category_label(v) for v in present)
        counts = np.array([seen.get(c, 0) for c in spec["categories"]], dtype=np.int64)
    else:
        raise ValueError(f"unknown reference kind {spec['kind']!r}")
    total = len(present)
    return [float(c) / total if total else 0.0 for c in counts], null_freq


def other_freq(freqs: Sequence[float]) -> float:
    """Share of non-null values outside the known categories (0 when there were none)."""
    total = math.fsum(freqs)
    return max(0.0, 1.0 - total) if total > 0 else 0.0


def numeric_reference(values: Iterable[Any], edges: Sequence[float] | None = None) -> dict[str, Any]:
    """A numeric spec; without ``edges``, the unique deciles of the non-null values."""
    present, _ = _present(values)
    if edges is None:
        present = np.asarray(present, dtype=np.float64)
        deciles = np.quantile(present, np.linspace(0.1, 0.9, 9), method="lower") if len(present) else np.array([])
        edges = [float(e) for e in np.unique(deciles)]
    spec: dict[str, Any] = {"kind": "numeric", "edges": [float(e) for e in edges]}
    spec["freqs"], spec["null_freq"] = histogram(values, spec)
    return spec


def categorical_reference(values: Iterable[Any], categories: Sequence[str]) -> dict[str, Any]:
    """A categorical spec over the known ``categories``."""
    spec: dict[str, Any] = {"kind": "categorical", "categories": list(categories)}
    freqs, null_freq = histogram(values, spec)
    spec.update(freqs=freqs, other_freq=other_freq(freqs), null_freq=null_freq)
    return spec


def _present(values: Iterable[Any]) -> tuple[np.ndarray, int]:
    """The non-null values (as an array) and how many values there were, nulls included."""
    isna = getattr(values, "isna", None)
    if callable(isna) and hasattr(values, "tolist"):  # a pandas Series: its own notion of null
        nulls = np.asarray(isna(), dtype=bool)
        present = values[~nulls].tolist()  # type: ignore[index]  # Python scalars, as pandas' own map gives
        return np.array(present, dtype=object), len(nulls)
    array = values if isinstance(values, np.ndarray) else np.array(list(values), dtype=object)
    if array.dtype.kind == "f":
        return array[~np.isnan(array)], len(array)
    if array.dtype.kind == "M" or array.dtype.kind == "m":
        return array[~np.isnat(array)], len(array)
    if array.dtype.kind != "O":
        return array, len(array)
    return np.array([v for v in array if not _is_null(v)], dtype=object), len(array)


def _is_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    if isinstance(value, np.datetime64 | np.timedelta64):
        return bool(np.isnat(value))
    return type(value).__name__ in _PANDAS_NULLS  # pd.NA, pd.NaT, without importing pandas


_PANDAS_NULLS = frozenset({"NAType", "NaTType"})
