"""Population stability index against a manifest reference spec.

Both distributions are laid out over the same buckets: the spec's bins of
non-null values scaled by the non-null share, then (categorical) the share
outside the known categories, then the null share — so each side sums to 1
over all values. ``PSI = Σ (a - e) · ln(a / e)`` over the buckets.

Empty buckets would make the logarithm infinite, so every share is floored
at ``EPSILON`` (1e-4) before the sum (the usual additive smoothing): a bucket
that is empty on both sides contributes 0, and a bucket that is empty on one
side contributes a large but finite term.

Thresholds (the common rule of thumb): below 0.1 no significant change,
0.1–0.25 ``warn``, 0.25 and above ``alert``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from app.model.reference import histogram, other_freq

EPSILON = 1e-4
WARN = 0.1
ALERT = 0.25


def buckets(freqs: Sequence[float], null_freq: float, spec: Mapping[str, Any]) -> list[float]:
    """Shares over all values: bins (scaled by the non-null share), other (categorical), null."""
    present = 1.0 - null_freq
    out = [f * present for f in freqs]
    if spec["kind"] == "categorical":
        out.append(other_freq(freqs) * present)
    out.append(null_freq)
    return out


def reference_buckets(spec: Mapping[str, Any]) -> list[float]:
    return buckets(spec["freqs"], float(spec.get("null_freq", 0.0)), spec)


def observed_buckets(values: Iterable[Any], spec: Mapping[str, Any]) -> list[float]:
    freqs, null_freq = histogram(values, spec)
    return buckets(freqs, null_freq, spec)


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = EPSILON) -> float:
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, epsilon), max(a, epsilon)
        total += (a - e) * math.log(a / e)
    return total


def status(value: float) -> str:
    if value >= ALERT:
        return "alert"
    if value >= WARN:
        return "warn"
    return "ok"


def bucket_labels(spec: Mapping[str, Any]) -> list[str]:
    if spec["kind"] == "categorical":
        return [*map(str, spec["categories"]), "(other)", "(null)"]
    edges = [float(e) for e in spec["edges"]]
    if not edges:
        return ["all", "(null)"]
    labels = [f"≤{edges[0]:.4g}"]
    labels += [f"{lo:.4g}–{hi:.4g}" for lo, hi in itertools.pairwise(edges)]
    labels.append(f">{edges[-1]:.4g}")
    return [*labels, "(null)"]
