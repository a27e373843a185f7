"""Prometheus metrics of the service and its jobs, all prefixed ``modelserve_``.

One ``Metrics`` object per container, registered on its own
``CollectorRegistry`` so that several apps (tests) never share state. No
label ever carries a user id.
"""

from __future__ import annotations

import bisect
import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

# Sub-millisecond buckets: the model itself answers in tens of microseconds.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.0075,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
DIFF_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


def observe_values(histogram: Histogram, values: list[float]) -> None:
    """``Histogram.observe`` of each of ``values``, each bucket and the sum updated once (a batch's rows)."""
    if len(values) < 2:
        for value in values:
            histogram.observe(value)
        return
    histogram._raise_if_not_observable()
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    for value in values:
        i = bisect.bisect_left(bounds, value)
        if i < len(bounds) and value == value:  # NaN: in no bucket, as observe leaves it
            counts[i] += 1
    histogram._sum.inc(sum(values))
    for i, n in enumerate(counts):
        if n:
            histogram._buckets[i].inc(n)


def observe_many(histogram: Histogram, amount: float, n: int) -> None:
    """``n`` observations of the same ``amount`` at the cost of one (a batch's rows share their latency).

    What ``Histogram.observe`` does, with ``n`` for 1: the sum grows by
    ``n × amount`` and the first bucket that holds ``amount`` by ``n``.
    """
    if n == 1:
        histogram.observe(amount)
        return
    histogram._raise_if_not_observable()
    histogram._sum.inc(amount * n)
    for i, bound in enumerate(histogram._upper_bounds):
        if amount <= bound:
            histogram._buckets[i].inc(n)
            break


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._multiprocess: CollectorRegistry | None = None
        self.predictions = Counter("modelserve_predictions", "Predictions served.", ["model_version"], registry=r)
        self.prediction_latency = Histogram(
            "modelserve_prediction_latency_seconds",
            "Time to produce a prediction (features + inference), per model version.",
            ["model_version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "modelserve_model_info",
            "1 for the version each alias currently points to.",
            ["alias", "version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.ready = Gauge(
            "modelserve_ready",
            "1 when the service reports ready.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.http_requests = Counter(
            "modelserve_http_requests",
            "HTTP requests by route template, method (known ones, else other) and status class (or disconnected).",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_connections_refused = Counter(
            "modelserve_http_connections_refused",
            "Connections the server cut before serving a request: connection_cap (503), evicted (still sending "
            "its first headers, closed for a newer connection), header_timeout and body_timeout (408), "
            "header_too_large (431), malformed (400: the request could not be parsed).",
            ["reason"],
            registry=r,
        )
        self.http_duration = Histogram(
            "modelserve_http_request_duration_seconds",
            "HTTP request duration by route template.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.grpc_requests = Counter(
            "modelserve_grpc_requests",
            "gRPC calls (Open Inference Protocol and health checking) by method and status code name.",
            ["method", "code"],
            registry=r,
        )
        self.grpc_duration = Histogram(
            "modelserve_grpc_request_duration_seconds",
            "gRPC call duration by method.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests_shed = Counter(
            "modelserve_requests_shed",
            "Prediction requests refused before inference (HTTP 503; gRPC UNAVAILABLE or DEADLINE_EXCEEDED), "
            "by reason (queue_time, overloaded, deadline).",
            ["reason"],
            registry=r,
        )
        for reason in ("queue_time", "overloaded", "deadline"):
            self.requests_shed.labels(reason)  # exported at 0, so alerts see every reason from the start
        self.shed_seconds = Histogram(
            "modelserve_requests_shed_seconds",
            "Server time a refusal took, from the decision to refuse (on arrival, or when the wait for a slot "
            "ran out) to the 503 sent.",
            buckets=(0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01),
            registry=r,
        )
        self.in_flight = Gauge(
            "modelserve_requests_in_flight",
            "Prediction requests running now (admitted, not yet answered).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.feature_lookups = Counter(
            "modelserve_feature_lookups",
            "Feature lookups by tier and outcome (hit, miss, negative, error, skipped, invalid, stale).",
            ["tier", "outcome"],
            registry=r,
        )
        self.feature_fetch = Histogram(
            "modelserve_feature_fetch_seconds",
            "Feature fetch time per tier.",
            ["tier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.circuit_state = Gauge(
            "modelserve_redis_circuit_state",
            "Redis circuit breaker: 0 closed, 1 half-open, 2 open.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.upstream_retries = Counter(
            "modelserve_upstream_retries", "Retries of upstream feature calls.", ["reason"], registry=r
        )
        self.shadow_predictions = Counter(
            "modelserve_shadow_predictions",
            "Shadow predictions by outcome (ok, error, timeout, dropped, incompatible).",
            ["outcome"],
            registry=r,
        )
        self.shadow_abs_diff = Histogram(
            "modelserve_shadow_abs_diff",
            "Absolute difference between primary and shadow: positive-class probability (binary), "
            "largest class probability (multiclass) or predicted value (regression).",
            buckets=DIFF_BUCKETS,
            registry=r,
        )
        self.shadow_label_disagreements = Counter(
            "modelserve_shadow_label_disagreements",
            "Shadow predictions whose label differs from the primary's (classifiers).",
            registry=r,
        )
        self.log_records = Counter(
            "modelserve_prediction_log_records", "Records written to the prediction log.", registry=r
        )
        self.log_dropped = Counter(
            "modelserve_prediction_log_dropped",
            "Records not written to the prediction log, by reason (queue_full, closed, unserialisable, write_error).",
            ["reason"],
            registry=r,
        )
        for reason in ("queue_full", "closed", "unserialisable", "write_error"):
            self.log_dropped.labels(reason)  # exported at 0, so rate() and alerts see every reason from the start
        self.log_sampled_out = Counter(
            "modelserve_prediction_log_sampled_out",
            "Prediction records not written because MODELSERVE_LOG_SAMPLE_RATE left them out (by design, not lost).",
            registry=r,
        )
        self.log_write_errors = Counter(
            "modelserve_prediction_log_write_errors",
            "Failed writes of the prediction log, by errno name (ENOSPC, EROFS, EACCES, EFBIG...).",
            ["error"],
            registry=r,
        )
        self.log_writable = Gauge(
            "modelserve_prediction_log_writable",
            "1 while the prediction log writes (or its probe succeeds), 0 while writes fail.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.log_free_bytes = Gauge(
            "modelserve_prediction_log_free_bytes",
            "Free bytes (for an unprivileged writer) on the prediction log's filesystem.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.log_files_deleted = Counter(
            "modelserve_prediction_log_files_deleted",
            "Rotated prediction log files deleted by retention, by reason (age, bytes).",
            ["reason"],
            registry=r,
        )
        self.duplicate_request_ids = Counter(
            "modelserve_duplicate_request_ids",
            "Predictions whose request_id was already seen among the process's recent predictions.",
            registry=r,
        )
        self.feedback = Counter(
            "modelserve_feedback",
            "Labels sent to /feedback, by outcome (accepted, invalid, dropped: accepted but not written).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("accepted", "invalid", "dropped"):
            self.feedback.labels(outcome)
        self.label_log_records = Counter(
            "modelserve_label_log_records", "Label lines written to the label log.", registry=r
        )
        self.label_log_writable = Gauge(
            "modelserve_label_log_writable",
            "1 while the label log writes (or its probe succeeds), 0 while writes fail.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.flags_reload_errors = Counter(
            "modelserve_flags_reload_errors", "Flags files refused (the last good one kept).", registry=r
        )
        self.model_load_errors = Counter(
            "modelserve_model_load_errors", "Model versions refused at load or reload.", registry=r
        )

    def exposition_registry(self) -> CollectorRegistry:
        """The registry /metrics renders: this process's, or all workers' in multiprocess mode."""
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            return self.registry
        if self._multiprocess is None:
            self._multiprocess = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._multiprocess)
        return self._multiprocess
