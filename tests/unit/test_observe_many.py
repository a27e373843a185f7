"""``observe_many``: n observations of one amount, exactly as n calls of ``observe`` would leave the histogram."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from app.telemetry.metrics import observe_many


def samples(histogram: Histogram) -> dict[str, float]:
    return {f"{s.name}{sorted(s.labels.items())}": s.value for m in histogram.collect() for s in m.samples}


@pytest.mark.parametrize("amount", [0.0, 0.0004, 0.003, 0.25, 99.0])
@pytest.mark.parametrize("n", [1, 2, 100])
def test_same_buckets_sum_and_count_as_n_observations(amount: float, n: int) -> None:
    one_by_one = Histogram("h", "h", registry=CollectorRegistry())
    at_once = Histogram("h", "h", registry=CollectorRegistry())
    for _ in range(n):
        one_by_one.observe(amount)
    observe_many(at_once, amount, n)
    assert samples(at_once) == pytest.approx(samples(one_by_one))
