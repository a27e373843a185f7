"""``observe_many`` and ``observe_values``: batched observations leave the histogram as one ``observe`` each would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from app.telemetry.metrics import observe_many, observe_values


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


@pytest.mark.parametrize(
    "values",
    [[], [0.3], [0.0, 0.0004, 0.0004, 0.003, 0.25, 99.0, 2.5, 0.005, float("inf")], [0.001 * i for i in range(200)]],
)
def test_values_leave_the_histogram_as_one_observe_each(values: list[float]) -> None:
    one_by_one = Histogram("h", "h", registry=CollectorRegistry())
    at_once = Histogram("h", "h", registry=CollectorRegistry())
    for value in values:
        one_by_one.observe(value)
    observe_values(at_once, values)
    assert samples(at_once) == pytest.approx(samples(one_by_one))
