"""The composition root: every service of the app, built from settings.

``build_container(settings)`` wires the production defaults; tests build one
with other parts (a local upstream, a real throwaway Redis) by passing
settings, or replace single attributes before the lifespan starts.
``start()`` does the slow work (loading, warm-up) and ``stop()`` tears down in
reverse order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app.features.build import build_feature_server
from app.features.server import FeatureServer
from app.health import Health
from app.model.pool import ModelPool
from app.model.repository import Repository
from app.predictor import Chooser, Predictor
from app.rollout.service import Rollout, attach_rollout
from app.settings import Settings
from app.telemetry.metrics import Metrics
from app.telemetry.prediction_log import PredictionLog

log = logging.getLogger("modelserve")


@dataclass
class Container:
    settings: Settings
    metrics: Metrics
    repository: Repository
    pool: ModelPool
    health: Health
    features: FeatureServer | None = None
    chooser: Chooser | None = None
    predictor: Predictor | None = None
    prediction_log: PredictionLog | None = None
    """Set when MODELSERVE_LOG_DIR is; its hooks are registered first so it closes last."""
    rollout: Rollout | None = None
    """Flags, alias following and the shadow (``app.rollout``); its chooser routes requests."""
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_fatal: Callable[[str], None] | None = None
    """Called when start-up fails (``serve`` uses it to exit non-zero)."""

    async def start(self) -> None:
        s = self.settings
        self.metrics.ready.set(0)
        primary_version = self.repository.resolve(s.alias)
        model = await asyncio.to_thread(self.pool.load, primary_version)
        self.pool.assign(s.alias, model)
        self.metrics.model_info.labels(s.alias, primary_version).set(1)
        if self.features is None:
            store = model.manifest.store_features  # with dtypes: Redis and upstream values are checked
            self.features = await asyncio.to_thread(build_feature_server, s, self.metrics, store)
        self.chooser = self.chooser or Chooser(self.pool, s.alias)
        self.predictor = Predictor(self.chooser, self.features, self.metrics)
        for hook in self.on_start:
            await hook()
        if s.warmup_delay_seconds:
            await asyncio.sleep(s.warmup_delay_seconds)
        self.health.mark_ready()
        self.metrics.ready.set(1)
        log.info("ready: %s -> %s", s.alias, primary_version)

    async def stop(self) -> None:
        self.health.start_draining()
        self.metrics.ready.set(0)
        for hook in reversed(self.on_stop):
            try:
                await hook()
            except Exception:  # one failing teardown must not skip the others
                log.exception("shutdown step failed")
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
    container = Container(settings=s, metrics=metrics, repository=repository, pool=pool, health=Health())
    if s.log_dir is not None:
        _attach_prediction_log(container)
    attach_rollout(container)
    return container


def _attach_prediction_log(c: Container) -> None:
    """Log every prediction; registered before any other hook, so it stops after them all
    (on_stop runs in reverse), once the shadow has drained its last results into it."""
    s = c.settings
    assert s.log_dir is not None
    plog = PredictionLog(
        s.log_dir,
        c.metrics,
        max_bytes=s.log_max_bytes,
        max_age_seconds=s.log_max_age_seconds,
        queue_size=s.log_queue_size,
        batch_size=s.log_batch_size,
        flush_seconds=s.log_flush_seconds,
        user_id_mode=s.log_user_id,
        user_id_key=s.log_user_id_key.get_secret_value().encode() if s.log_user_id_key else None,
        retention_seconds=s.log_retention_seconds,
        retention_bytes=s.log_retention_bytes,
        duplicate_window=s.log_duplicate_window,
    )
    c.prediction_log = plog
    if s.log_failure_policy == "not_ready":
        c.health.checks.append(plog.readiness_failure)

    async def start() -> None:
        plog.start()
        assert c.predictor is not None
        c.predictor.listeners.append(plog.listener)

    c.on_start.insert(0, start)
    c.on_stop.insert(0, plog.close)
