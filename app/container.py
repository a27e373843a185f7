"""The composition root: every service of the app, built from settings.

``build_container(settings)`` builds every part and wires them together: the
model repository and pool, the prediction log and the label log beside it
(when ``MODELSERVE_LOG_DIR`` is set), the rollout (flags, follower, shadow; the prediction log is the
shadow's sink when there is one), the V2 data plane and, when ``MODELSERVE_GRPC_PORT`` is set, its
gRPC server. Nothing is attached
later. Tests build one with other parts (a local upstream, a real throwaway
Redis) by passing settings, or replace attributes of the built parts before
the lifespan starts.

``start()`` does the slow work (loading, warm-up) step by step and ``stop()``
undoes it in reverse order; both list their steps in that order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.api.admission import Admission
from app.features.build import build_feature_server
from app.features.server import FeatureServer
from app.health import Health
from app.model.pool import ModelPool
from app.model.repository import Repository
from app.predictor import Predictor
from app.rollout.service import Rollout
from app.settings import Settings
from app.telemetry import tracing
from app.telemetry.label_log import LabelLog
from app.telemetry.metrics import Metrics
from app.telemetry.prediction_log import PredictionLog
from app.v2 import V2Service

if TYPE_CHECKING:
    from app.rpc.server import GrpcServer

log = logging.getLogger("modelserve")


@dataclass
class Container:
    settings: Settings
    metrics: Metrics
    repository: Repository
    pool: ModelPool
    health: Health
    rollout: Rollout
    """Flags, alias following and the shadow (``app.rollout``); its chooser routes requests."""
    v2: V2Service
    """The Open Inference Protocol data plane (``/v2/...``)."""
    admission: Admission
    """The worker's limits on prediction requests, shared by HTTP and gRPC (``app.api.admission``)."""
    prediction_log: PredictionLog | None = None
    """Set when MODELSERVE_LOG_DIR is; started before the rollout and closed after it."""
    label_log: LabelLog | None = None
    """Ground truth from /feedback, beside the prediction log (set with it); closed after the routes stop."""
    features: FeatureServer | None = None
    """Built at start from the primary model's store features, unless given."""
    predictor: Predictor | None = None
    """Built at start, once the primary model and the feature server exist."""
    grpc: GrpcServer | None = None
    """The gRPC front end (``app.rpc``) when MODELSERVE_GRPC_PORT is set; listening from the first step."""
    on_fatal: Callable[[str], None] | None = None
    """Called when start-up fails (``serve`` uses it to exit non-zero)."""

    async def start(self) -> None:
        s = self.settings
        self.metrics.ready.set(0)
        # 0. Tracing, from the standard OTEL_* variables (off when no endpoint is set).
        tracing.setup()
        # 0. gRPC listening, like HTTP, while the model loads: its health answers NOT_SERVING until step 6.
        if self.grpc is not None:
            await self.grpc.start()
        # 1. The primary model: loaded, warmed up and self-checked.
        primary_version = self.repository.resolve(s.alias)
        model = await self.pool.load_async(primary_version)
        self.pool.assign(s.alias, model)
        self.metrics.model_info.labels(s.alias, primary_version).set(1)
        # 2. The feature tiers its store features need.
        if self.features is None:
            store = model.manifest.store_features  # with dtypes: Redis and upstream values are checked
            self.features = await asyncio.to_thread(build_feature_server, s, self.metrics, store)
        # 3. The predictor, routed by the rollout's chooser.
        predictor = self.predictor = Predictor(self.rollout.chooser, self.features, self.metrics)
        # 4. The prediction and label logs, before anything writes to them.
        if self.prediction_log is not None:
            self.prediction_log.start()
            predictor.add_listener(self.prediction_log.listener, self.prediction_log.listener_many)
        if self.label_log is not None:
            self.label_log.start()
        # 5. The rollout: flags, other versions, shadow workers, polling.
        await self.rollout.start(predictor)
        # 6. Ready.
        if s.warmup_delay_seconds:
            await asyncio.sleep(s.warmup_delay_seconds)
        self.health.mark_ready()
        self.metrics.ready.set(1)
        log.info("ready: %s -> %s", s.alias, primary_version)

    async def stop(self) -> None:
        # start()'s steps in reverse: not ready first (probes answer 503 / NOT_SERVING meanwhile),
        # then the rollout (the shadow drains its last results into the log), the logs, the feature
        # tiers; gRPC first of all, letting its calls in flight finish while everything still works.
        self.health.start_draining()
        self.metrics.ready.set(0)
        steps = (
            self._stop_grpc,
            self.rollout.stop,
            self._close_prediction_log,
            self._close_label_log,
            self._close_features,
            self._stop_tracing,
        )
        for step in steps:
            try:
                await step()
            except Exception:  # one failing teardown must not skip the others
                log.exception("shutdown step failed")

    async def _stop_grpc(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop()

    async def _close_prediction_log(self) -> None:
        if self.prediction_log is not None:
            await self.prediction_log.close()

    async def _close_label_log(self) -> None:
        if self.label_log is not None:
            await self.label_log.close()

    async def _stop_tracing(self) -> None:
        await asyncio.to_thread(tracing.shutdown)  # exports what is queued: network I/O, off the loop

    async def _close_features(self) -> None:
        if self.features is not None:
            await self.features.close()


def build_container(settings: Settings | None = None) -> Container:
    s = settings or Settings()
    metrics = Metrics()
    repository = Repository(s.models_dir)
    pool = ModelPool(
        repository,
        intra_op_threads=s.ort_intra_op_threads,
        inter_op_threads=s.ort_inter_op_threads,
        warmup_iterations=s.warmup_iterations,
        tolerance=s.selfcheck_tolerance,
        max_batch=s.max_batch_size,
    )
    prediction_log = _prediction_log(s.log_dir, s, metrics) if s.log_dir is not None else None
    label_log = _label_log(s.log_dir, s, metrics) if s.log_dir is not None else None
    rollout = Rollout(
        s,
        repository,
        pool,
        metrics,
        sink=prediction_log.submit if prediction_log else None,
        sink_many=prediction_log.submit_many if prediction_log else None,
    )
    health = Health()
    if prediction_log is not None and s.log_failure_policy == "not_ready":
        health.checks.append(prediction_log.readiness_failure)  # the label log shares its disk
    container = Container(
        settings=s,
        metrics=metrics,
        repository=repository,
        pool=pool,
        health=health,
        rollout=rollout,
        v2=V2Service(pool, s.alias, s.max_batch_size, aliases=rollout.follower.alias_models),
        admission=Admission(metrics, s.max_in_flight, s.max_queue_ms),
        prediction_log=prediction_log,
        label_log=label_log,
    )
    if s.grpc_port is not None:
        # Imported only when used: its generated messages would collide with a client library's copy.
        from app.rpc.server import GrpcServer

        container.grpc = GrpcServer(container)
    return container


def _writer_options(s: Settings) -> dict[str, Any]:
    """What the prediction log and the label log share: rotation, batching and retention."""
    return {
        "max_bytes": s.log_max_bytes,
        "max_age_seconds": s.log_max_age_seconds,
        "queue_size": s.log_queue_size,
        "batch_size": s.log_batch_size,
        "flush_seconds": s.log_flush_seconds,
        "retention_seconds": s.log_retention_seconds,
        "retention_bytes": s.log_retention_bytes,
    }


def _prediction_log(directory: Path, s: Settings, metrics: Metrics) -> PredictionLog:
    return PredictionLog(
        directory,
        metrics,
        **_writer_options(s),
        user_id_mode=s.log_user_id,
        user_id_key=s.log_user_id_key.get_secret_value().encode() if s.log_user_id_key else None,
        duplicate_window=s.log_duplicate_window,
        sample_rate=s.log_sample_rate,
    )


def _label_log(directory: Path, s: Settings, metrics: Metrics) -> LabelLog:
    return LabelLog(directory, metrics, **_writer_options(s))
