"""Prediction log sampling: a seeded, per-request-id decision at the configured rate; shadow lines always kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest

from app.predictor import PredictionRecord
from app.telemetry.log_lines import sampled_in, shadow_line
from app.telemetry.metrics import Metrics
from app.telemetry.prediction_log import PredictionLog
from tests.support.metrics import metric_value

N = 10_000


def text(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def record(request_id: str) -> PredictionRecord:
    return PredictionRecord(
        request_id=request_id,
        model_version="v2",
        prediction=1,
        probability=0.75,
        user_id="u-00001",
        features={"amount": 12.5},
        request_features={"amount": 12.5},
        latency=0.0002,
        tier="table",
    )


def lines(directory: Path) -> list[dict[str, Any]]:
    return [
        orjson.loads(line)
        for p in sorted(directory.glob("predictions-*.jsonl"))
        for line in p.read_bytes().splitlines()
    ]


def ids(n: int) -> list[str]:
    return [f"{i:08x}-req" for i in range(n)]


class TestSampledIn:
    @pytest.mark.parametrize("rate", [0.01, 0.1, 0.25, 0.5, 0.9])
    def test_keeps_the_rate_within_two_percent(self, rate: float) -> None:
        """Over 10,000 request ids the kept fraction is within ±2 points of the rate."""
        kept = sum(sampled_in(rid, rate) for rid in ids(N))
        assert abs(kept / N - rate) <= 0.02, kept

    def test_same_request_id_same_decision(self) -> None:
        """A request id gets the same answer every time (a client's retries agree), and a lower rate keeps a subset."""
        first = [sampled_in(rid, 0.3) for rid in ids(2000)]
        assert first == [sampled_in(rid, 0.3) for rid in ids(2000)]
        low = {rid for rid in ids(2000) if sampled_in(rid, 0.1)}
        high = {rid for rid in ids(2000) if sampled_in(rid, 0.3)}
        assert low < high

    def test_edges(self) -> None:
        """Rate 1 keeps every record and rate 0 none."""
        assert all(sampled_in(rid, 1.0) for rid in ids(1000))
        assert not any(sampled_in(rid, 0.0) for rid in ids(1000))


class TestWriterSampling:
    def test_writer_keeps_the_rate_and_counts_the_rest(self, tmp_path: Path) -> None:
        """At rate 0.2 the writer keeps 20% ±2 of 10,000 predictions (those sampled_in picks) and counts the rest."""
        metrics = Metrics()
        plog = PredictionLog(tmp_path, metrics, sample_rate=0.2, queue_size=N)
        for rid in ids(N):
            plog.listener(record(rid), None)
        plog.close_sync()
        written = lines(tmp_path)
        kept = [line["request_id"] for line in written]
        assert abs(len(kept) / N - 0.2) <= 0.02
        assert kept == [rid for rid in ids(N) if sampled_in(rid, 0.2)]
        assert {line["sample_rate"] for line in written} == {0.2}
        assert metric_value(text(metrics), "modelserve_prediction_log_sampled_out_total") == N - len(kept)
        assert metric_value(text(metrics), "modelserve_prediction_log_records_total") == len(kept)

    def test_shadow_lines_are_kept_even_when_their_prediction_is_not(self, tmp_path: Path) -> None:
        """Shadow and shadow_drops lines are never sampled out, whatever the rate."""
        plog = PredictionLog(tmp_path, Metrics(), sample_rate=0.0)
        for rid in ids(50):
            rec = record(rid)
            plog.listener(rec, None)
            plog.submit(shadow_line(rec, timestamp=1.0, shadow_version="v3", outcome="error"))
        plog.submit({"kind": "shadow_drops", "shadow_version": "v3", "dropped": 2})
        plog.close_sync()
        kinds = [line["kind"] for line in lines(tmp_path)]
        assert kinds.count("prediction") == 0 and kinds.count("shadow") == 50 and kinds.count("shadow_drops") == 1

    def test_default_keeps_everything(self, tmp_path: Path) -> None:
        """Without a rate every prediction is written, marked sample_rate 1.0, and nothing is counted as sampled out."""
        metrics = Metrics()
        plog = PredictionLog(tmp_path, metrics)
        for rid in ids(500):
            plog.listener(record(rid), None)
        plog.close_sync()
        written = lines(tmp_path)
        assert len(written) == 500 and {line["sample_rate"] for line in written} == {1.0}
        assert metric_value(text(metrics), "modelserve_prediction_log_sampled_out_total") == 0

    def test_rate_outside_zero_to_one_is_refused(self, tmp_path: Path) -> None:
        """A rate below 0 or above 1 is a configuration error, not a silent clamp."""
        for rate in (-0.1, 1.5):
            with pytest.raises(ValueError, match="sample_rate"):
                PredictionLog(tmp_path, Metrics(), sample_rate=rate)
