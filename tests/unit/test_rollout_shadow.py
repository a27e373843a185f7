"""The shadow worker with fake candidates: outcomes, isolation, bounds."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

from app.predictor import PredictionRecord
from app.rollout.shadow import BATCH_SIZE, LINGER, Shadow
from app.settings import Settings
from app.telemetry.metrics import Metrics


class FakeCandidate:
    """Answers label 1 with a fixed probability, optionally after a delay."""

    version = "v3"
    task = "binary_classification"
    signature = ()

    def __init__(self, probability: float = 0.25, delay: float = 0.0) -> None:
        self.probability = probability
        self.delay = delay
        self.rows = 0

    def answer(self, rows):
        if self.delay:
            time.sleep(self.delay)
        self.rows += len(rows)
        self.calls = getattr(self, "calls", 0) + 1
        return [(1, self.probability, None)] * len(rows)


class RaisingCandidate(FakeCandidate):
    def answer(self, rows):
        raise RuntimeError("candidate exploded")


class HangingCandidate(FakeCandidate):
    """Blocks until released (tests release it, so no thread outlives them)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = 0

    def answer(self, rows):
        self.entered += 1
        self.release.wait(30)
        return super().answer(rows)


class FakeModel:
    """The version that answered, as ``offer_many`` is told it (task and inputs for the compatibility check)."""

    def __init__(self, version: str, task: str = "binary_classification") -> None:
        self.version = version
        self.task = task
        self.manifest = SimpleNamespace(input_signature=lambda: ())


def record(i: int, version: str = "v2", probability: float = 0.75) -> PredictionRecord:
    return PredictionRecord(
        request_id=f"req-{i}",
        model_version=version,
        prediction=1,
        probability=probability,
        user_id=f"u-{i}",
        features={"x": i},
        request_features={"x": i},
        latency=0.001,
        tier="memory",
    )


def make(candidate, **kw):
    records: list[dict] = []
    metrics = Metrics()
    opts = {"queue_size": 100, "concurrency": 1, "timeout": 0.2, "batch_size": 8, "drops_interval": 0, **kw}
    shadow = Shadow(metrics, records.append, **opts)
    shadow.candidate = candidate
    return shadow, records, metrics


def count(metrics: Metrics, outcome: str) -> float:
    return metrics.shadow_predictions.labels(outcome)._value.get()


class TestOutcomes:
    async def test_ok_records_carry_both_sides(self):
        """Each result is recorded under the primary's request id with both versions, outputs and |diff|."""
        shadow, records, metrics = make(FakeCandidate(0.25))
        await shadow.start()
        for i in range(20):
            shadow.offer(record(i), None)
        assert await shadow.idle()
        await shadow.stop()
        assert len(records) == 20 and count(metrics, "ok") == 20
        first = records[0]
        assert first["kind"] == "shadow" and first["outcome"] == "ok"
        assert first["request_id"] == "req-0"
        assert (first["primary_version"], first["shadow_version"]) == ("v2", "v3")
        assert (first["primary_prediction"], first["shadow_prediction"]) == (1, 1)
        assert first["abs_diff"] == pytest.approx(0.5)
        assert first["shadow_latency"] >= 0 and first["primary_latency"] == 0.001
        assert isinstance(first["timestamp"], float)
        assert metrics.shadow_abs_diff._sum.get() == pytest.approx(10.0)

    async def test_raising_candidate_is_counted_as_errors(self):
        """A candidate that raises never affects the caller; every record is an error with null shadow fields."""
        shadow, records, metrics = make(RaisingCandidate())
        await shadow.start()
        for i in range(10):
            shadow.offer(record(i), None)  # must not raise
        assert await shadow.idle()
        await shadow.stop()
        assert count(metrics, "error") == 10 and count(metrics, "ok") == 0
        assert {r["outcome"] for r in records} == {"error"}
        assert all(r["shadow_probability"] is None and r["abs_diff"] is None for r in records)

    async def test_slow_candidate_times_out_fast_one_does_not(self):
        """A run longer than the timeout counts as timeouts; a slower-than-usual but in-time one is ok."""
        shadow, _records, metrics = make(FakeCandidate(delay=0.3), timeout=0.05, batch_size=100)
        await shadow.start()
        for i in range(5):
            shadow.offer(record(i), None)
        assert await shadow.idle()
        await shadow.stop()
        assert count(metrics, "timeout") == 5
        shadow, _records, metrics = make(FakeCandidate(delay=0.02), timeout=1.0)
        await shadow.start()
        for i in range(5):
            shadow.offer(record(i), None)
        assert await shadow.idle()
        await shadow.stop()
        assert count(metrics, "ok") == 5

    async def test_records_offered_together_run_as_one_batch(self):
        """A worker waits ``linger`` for a batch to gather: records offered meanwhile share one run."""
        candidate = FakeCandidate()
        shadow, records, metrics = make(candidate, batch_size=64, linger=0.5)
        await shadow.start()
        for i in range(10):
            shadow.offer(record(i), None)
        assert await shadow.idle()
        await shadow.stop()
        assert candidate.calls == 1 and candidate.rows == 10
        assert count(metrics, "ok") == 10 and [r["request_id"] for r in records] == [f"req-{i}" for i in range(10)]

    async def test_a_whole_batch_does_not_wait_out_the_linger(self):
        """Workers linger ``LINGER`` (20 ms) by default, which only ever delays a batch that is not full yet."""
        assert Shadow(Metrics()).linger == LINGER == 0.02
        assert Shadow(Metrics()).batch_size == Settings().shadow_batch_size == BATCH_SIZE == 128
        candidate = FakeCandidate()
        shadow, _records, metrics = make(candidate, batch_size=8, linger=3600)
        await shadow.start()
        shadow.offer_many([record(i) for i in range(16)], FakeModel("v2"))  # two whole batches at once
        assert await shadow.idle(timeout=30)
        await shadow.stop()
        assert candidate.rows == 16 and count(metrics, "ok") == 16

    async def test_same_version_and_no_candidate_are_not_shadowed(self):
        """A request already served by the candidate's version, or with no candidate, is not offered."""
        shadow, records, _metrics = make(FakeCandidate())
        await shadow.start()
        shadow.offer(record(0, version="v3"), None)
        shadow.candidate = None
        shadow.offer(record(1), None)
        assert await shadow.idle()
        await shadow.stop()
        assert records == [] and sum(shadow.counts.values()) == 0


class TestIsolation:
    async def test_hanging_candidate_never_blocks_the_loop_and_bounds_threads(self):
        """A hung candidate: timeouts, then drops once its threads are held; the loop stays responsive."""
        hanging = HangingCandidate()
        shadow, _records, metrics = make(hanging, queue_size=4, concurrency=2, batch_size=1, timeout=0.05)
        await shadow.start()
        try:
            offered = 0
            worst = 0.0
            for i in range(40):
                t0 = time.perf_counter()
                shadow.offer(record(i), None)
                offered += 1
                await asyncio.sleep(0.005)
                worst = max(worst, time.perf_counter() - t0)
            assert worst < 0.1  # the event loop never waited on the candidate
            assert hanging.entered == 2  # at most `concurrency` calls are ever stuck
            assert len(shadow._threads) == 2  # this shadow's threads (earlier tests' may linger)
            assert count(metrics, "timeout") == 2
            assert count(metrics, "dropped") > 0
        finally:
            hanging.release.set()
        assert await shadow.idle()
        await shadow.stop()
        # Every record offered is counted exactly once.
        assert sum(shadow.counts.values()) == offered
        outcomes = {o: count(metrics, o) for o in ("ok", "error", "timeout", "dropped", "incompatible")}
        assert outcomes == shadow.counts

    async def test_full_queue_drops_without_waiting_and_reports_drops(self):
        """Offers beyond the queue are dropped at once, counted, and summarised in a shadow_drops record."""
        hanging = HangingCandidate()
        shadow, records, metrics = make(hanging, queue_size=3, concurrency=1, batch_size=1, timeout=5)
        await shadow.start()
        try:
            shadow.offer(record(0), None)
            await asyncio.sleep(0.05)  # the worker holds record 0 in the hung call
            t0 = time.perf_counter()
            for i in range(1, 11):
                shadow.offer(record(i), None)
            assert time.perf_counter() - t0 < 0.01
            assert count(metrics, "dropped") == 7
        finally:
            hanging.release.set()
        assert await shadow.idle()
        await shadow.stop()
        drops = [r for r in records if r["kind"] == "shadow_drops"]
        assert drops == [
            {"kind": "shadow_drops", "timestamp": drops[0]["timestamp"], "shadow_version": "v3", "dropped": 7}
        ]
        assert count(metrics, "ok") == 4

    async def test_batch_offer_queues_each_record_and_drops_what_does_not_fit(self):
        """``offer_many`` queues a batch's records as ``offer`` would: in order, the overflow dropped and counted."""
        hanging = HangingCandidate()
        shadow, records, metrics = make(hanging, queue_size=5, concurrency=1, batch_size=1, timeout=5)
        model = FakeModel("v2")
        await shadow.start()
        try:
            shadow.offer(record(0), None)
            await asyncio.sleep(0.05)  # the worker holds record 0 in the hung call
            shadow.offer_many([record(i) for i in range(1, 9)], model)
            assert count(metrics, "dropped") == 3
            shadow.offer_many([record(9, version="v3")], FakeModel("v3"))  # the candidate's own version: not shadowed
        finally:
            hanging.release.set()
        assert await shadow.idle()
        await shadow.stop()
        assert [r["request_id"] for r in records if r["kind"] == "shadow"] == [f"req-{i}" for i in range(6)]
        assert count(metrics, "ok") == 6 and count(metrics, "dropped") == 3

    async def test_batch_offer_of_an_incompatible_version_is_counted_per_record(self):
        shadow, records, metrics = make(FakeCandidate())
        await shadow.start()
        shadow.offer_many([record(i) for i in range(4)], FakeModel("v2", task="regression"))
        await shadow.stop()
        assert count(metrics, "incompatible") == 4 and records == []

    async def test_batch_sink_takes_a_runs_records_in_one_call(self):
        """With ``sink_many``, a run's records reach it in one call, in order, and ``sink`` is not called."""
        metrics = Metrics()
        single: list[dict] = []
        calls: list[list[dict]] = []
        shadow = Shadow(
            metrics, single.append, sink_many=calls.append, queue_size=100, batch_size=64, linger=0.5, drops_interval=0
        )
        shadow.candidate = FakeCandidate(0.25)
        await shadow.start()
        shadow.offer_many([record(i) for i in range(10)], FakeModel("v2"))
        assert await shadow.idle()
        await shadow.stop()
        assert single == [] and len(calls) == 1
        assert [r["request_id"] for r in calls[0]] == [f"req-{i}" for i in range(10)]
        assert {r["outcome"] for r in calls[0]} == {"ok"} and calls[0][0]["abs_diff"] == pytest.approx(0.5)

    @pytest.mark.parametrize("batch", [False, True])
    async def test_sink_failure_is_contained(self, batch):
        """A sink (or ``sink_many``) that raises loses its records but never stops the shadow."""

        def failing(rec):
            raise OSError("disk full")

        sinks = {"sink_many": failing} if batch else {}
        shadow = Shadow(Metrics(), print if batch else failing, queue_size=10, timeout=1, drops_interval=0, **sinks)
        shadow.candidate = FakeCandidate()
        await shadow.start()
        for i in range(3):
            shadow.offer(record(i), None)
        assert await shadow.idle()
        await shadow.stop()
        assert shadow.counts["ok"] == 3


class TestCandidateReplaced:
    async def test_records_queued_for_a_replaced_candidate_are_dropped_not_run(self):
        """After the candidate changes, records still queued for the old one are counted as dropped, not run on it."""
        hanging = HangingCandidate()
        shadow, records, metrics = make(hanging, timeout=5.0, batch_size=1)
        await shadow.start()
        try:
            shadow.offer(record(0), None)
            deadline = time.monotonic() + 5
            while hanging.entered == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            assert hanging.entered == 1  # the worker is stuck in the old candidate
            for i in range(1, 6):
                shadow.offer(record(i), None)  # queued behind it, for the old candidate
            fresh = FakeCandidate(0.5)
            fresh.version = "v4"
            shadow.candidate = fresh
            shadow.offer(record(6), None)
            hanging.release.set()
            assert await shadow.idle()
        finally:
            hanging.release.set()
            await shadow.stop()
        assert hanging.entered == 1  # the 5 queued records never ran on the old candidate
        assert count(metrics, "dropped") == 5
        assert fresh.rows == 1
        shadows = [r for r in records if r["kind"] == "shadow"]
        assert [r["shadow_version"] for r in shadows if r["outcome"] == "ok"] == ["v3", "v4"]
