"""Safe rollout, put together: flags, the model follower and the shadow.

``Rollout`` is built by ``build_container`` and started and stopped by the
container (``Container.start``/``stop``); its chooser routes every request.
At start it reads the flags file (an invalid one fails start-up: there is no
last good one yet), loads the candidate and the flagged versions (failures
there are counted and logged, never fatal: the primary is what readiness
means), starts the shadow workers and two polling tasks — the alias links
every ``alias_poll_seconds`` and the flags file every ``flags_poll_seconds``.
``reload()`` (``POST /admin/reload``) does both at once and retries versions
that failed before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from app.model.pool import LoadedModel, ModelPool
from app.model.repository import Repository
from app.predictor import Predictor
from app.rollout.chooser import FlagChooser
from app.rollout.follower import ModelFollower, SyncResult
from app.rollout.shadow import ModelCandidate, Shadow, Sink, SinkMany, log_sink
from app.rollout.watch import FlagsWatcher
from app.settings import Settings
from app.telemetry.metrics import Metrics

log = logging.getLogger("modelserve.rollout")


class Rollout:
    """Flags, alias following and the shadow.

    ``sink`` receives the shadow's records (default: the ``modelserve.shadow`` logger);
    ``sink_many``, when given, a batch's records at once.
    """

    def __init__(
        self,
        settings: Settings,
        repository: Repository,
        pool: ModelPool,
        metrics: Metrics,
        sink: Sink | None = None,
        sink_many: SinkMany | None = None,
    ) -> None:
        s = settings
        self.settings = settings
        self.chooser = FlagChooser(pool, s.alias)
        self.shadow = Shadow(
            metrics,
            sink or log_sink,
            sink_many=sink_many,
            queue_size=s.shadow_queue_size,
            concurrency=s.shadow_concurrency,
            timeout=s.shadow_timeout_seconds,
            batch_size=s.shadow_batch_size,
        )
        candidate_alias = s.candidate_alias if s.shadow_enabled and s.candidate_alias else None
        self.follower = ModelFollower(
            repository, pool, metrics, s.alias, candidate_alias, on_candidate=self._set_candidate
        )
        self.watcher = FlagsWatcher(s.flags_file, metrics) if s.flags_file is not None else None
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    def _set_candidate(self, model: LoadedModel | None) -> None:
        self.shadow.candidate = ModelCandidate(model) if model is not None else None

    # --- lifecycle ---------------------------------------------------------
    async def start(self, predictor: Predictor) -> None:
        features = predictor.features
        self.follower.check = lambda model: features.require(model.store_features)
        if self.watcher is not None:
            await asyncio.to_thread(self.watcher.load_initial)
        await self.refresh()
        await self.shadow.start()
        predictor.add_listener(self.shadow.offer, self.shadow.offer_many)
        s = self.settings
        if s.alias_poll_seconds > 0:
            self._tasks.append(asyncio.create_task(self._every(s.alias_poll_seconds, self.refresh), name="alias-poll"))
        if self.watcher is not None and s.flags_poll_seconds > 0:
            self._tasks.append(
                asyncio.create_task(self._every(s.flags_poll_seconds, self._check_flags), name="flags-poll")
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.shadow.stop()

    # --- changes -------------------------------------------------------------
    async def refresh(self, force: bool = False) -> SyncResult:
        """Sync loaded models with the aliases and the current flags, then route with them."""
        async with self._lock:
            flags = self.watcher.flags if self.watcher is not None else ()
            result = await self.follower.sync((f.version for f in flags), force=force)
            # Models first, then flags: a new flag never points at a version not yet loaded.
            self.chooser.models = dict(self.follower.flag_models)
            self.chooser.flags = flags
            return result

    async def _check_flags(self) -> None:
        if self.watcher is not None and self.watcher.check() is not None:
            await self.refresh()

    async def reload(self) -> SyncResult:
        """Re-read the flags file and the aliases now, retrying versions that failed before."""
        if self.watcher is not None:
            self.watcher.check(force=True)
        return await self.refresh(force=True)

    async def _every(self, interval: float, step: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await step()
            except Exception:  # keep polling whatever one round hit
                log.exception("rollout poll failed")

    # --- state -----------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        """Alias -> version served: the primary (and any other pool alias) plus the shadowed candidate."""
        out = self.chooser.pool.aliases()
        candidate = self.follower.candidate_model
        if candidate is not None and self.follower.candidate:
            out[self.follower.candidate] = candidate.version
        return out

    def describe(self) -> dict[str, Any]:
        pool = self.chooser.pool
        candidate = self.follower.candidate_model
        return {
            "aliases": self.aliases(),
            "flags": [{**f.describe(), "loaded": f.version in self.chooser.models} for f in self.chooser.flags],
            "flags_file": self.watcher.describe() if self.watcher is not None else None,
            "loaded_versions": sorted(
                {m.version for m in (*pool.by_alias.values(), *self.chooser.models.values())}
                | ({candidate.version} if candidate is not None else set())
            ),
            "shadow": self.shadow.describe(),
            "last_sync": self.follower.last_sync,
            "recent_errors": self.follower.recent_errors,
        }
