"""Seeded Poisson bootstrap: replicate weights instead of resampled copies.

Each replicate gives every row a Poisson(1) weight (how many times it would
have been drawn), so a metric written over weighted rows is evaluated on the
replicate without copying or re-sorting the data: ROC AUC sorts once for all
replicates. For n in the hundreds and above this matches the classic
multinomial bootstrap; it is what makes 200 replicates over a million rows
take seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

REPLICATES = 200
SEED = 0
LEVEL = 0.95

Weighted = Callable[[np.ndarray | None], float]
"""A metric of the rows under weights (``None``: every row once)."""


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile bootstrap interval (``low``/``high`` None when not computable)."""

    value: float
    low: float | None
    high: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"value": self.value, "low": self.low, "high": self.high}


def weights(n: int, replicates: int = REPLICATES, seed: int = SEED) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    for _ in range(replicates):
        yield rng.poisson(1.0, n).astype(np.float64)


def intervals(
    metrics: dict[str, Weighted], n: int, replicates: int = REPLICATES, seed: int = SEED, level: float = LEVEL
) -> dict[str, Interval]:
    """Point value and percentile interval of each metric over the same replicates (so they are paired)."""
    points = {name: f(None) for name, f in metrics.items()}
    draws: dict[str, list[float]] = {name: [] for name in metrics}
    if n > 1 and replicates > 0:
        for w in weights(n, replicates, seed):
            for name, f in metrics.items():
                draws[name].append(f(w))
    out = {}
    tail = (1.0 - level) / 2
    for name, value in points.items():
        sample = np.asarray(draws[name], dtype=np.float64)
        sample = sample[np.isfinite(sample)]
        if len(sample) < max(10, replicates // 2) or not np.isfinite(value):
            out[name] = Interval(value, None, None)
        else:
            low, high = np.quantile(sample, [tail, 1.0 - tail])
            out[name] = Interval(value, float(low), float(high))
    return out
