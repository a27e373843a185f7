"""Following the repository: aliases and flag versions → loaded models, without a restart.

``sync()`` compares what the models directory says (the primary alias, the
candidate alias) and what the flags name with what is loaded, loads what is
new off the event loop (``pool.load``: checksums, warm-up, self-check) and
only then swaps it in: one dict store per alias, so in-flight requests finish
on the model they started with. A version that fails to load is refused,
counted (``modelserve_model_load_errors_total``) and logged, as is one whose
store features the running feature tiers cannot give (``check``); the old one keeps
serving, and polling does not retry that same target until the alias moves
again (``POST /admin/reload`` retries it at once).

Only the versions that the two aliases and the flags name are loaded; a
version nothing names any more is dropped after the swap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from app.errors import ModelServeError
from app.model.pool import LoadedModel, ModelPool
from app.model.repository import Repository
from app.telemetry.metrics import Metrics

log = logging.getLogger("modelserve.rollout")


@dataclass
class SyncResult:
    changed: list[dict[str, Any]] = field(default_factory=list)
    """``{"alias", "from", "to"}`` for each alias that moved."""
    errors: list[dict[str, Any]] = field(default_factory=list)
    """``{"alias" or "flag_version", "version", "error"}`` for each refused version."""


class ModelFollower:
    def __init__(
        self,
        repository: Repository,
        pool: ModelPool,
        metrics: Metrics,
        primary: str = "production",
        candidate: str | None = "candidate",
        on_candidate: Callable[[LoadedModel | None], None] = lambda _: None,
    ) -> None:
        self.repository = repository
        self.pool = pool
        self.metrics = metrics
        self.primary = primary
        self.candidate = candidate
        self.on_candidate = on_candidate
        self.flag_models: dict[str, LoadedModel] = {}
        """Version -> loaded model, for every version a flag names that loaded."""
        self.candidate_model: LoadedModel | None = None
        """The shadowed model, kept out of the pool's aliases: readiness lists what must be ready, and the
        candidate never has to be."""
        self._failed: dict[str, str] = {}  # alias or "flag:<version>" -> target that failed
        self._lock = asyncio.Lock()
        self.last_sync: float | None = None
        self.recent_errors: list[dict[str, Any]] = []
        self.check: Callable[[LoadedModel], None] | None = None
        """Raises ``ModelServeError`` for a loaded model the service cannot serve (set once features exist)."""

    def alias_models(self) -> dict[str, LoadedModel]:
        """Every loaded alias by name, the shadowed candidate included."""
        out = dict(self.pool.by_alias)
        if self.candidate and self.candidate_model is not None:
            out[self.candidate] = self.candidate_model
        return out

    def _loaded(self, version: str) -> LoadedModel | None:
        for model in (*self.pool.by_alias.values(), *self.flag_models.values(), self.candidate_model):
            if model is None:
                continue
            if model.version == version:
                return model
        return None

    async def _load(self, key: str, version: str, force: bool, result: SyncResult) -> LoadedModel | None:
        model = self._loaded(version)
        if model is not None:
            return model
        if not force and self._failed.get(key) == version:
            return None
        try:
            model = await self.pool.load_async(version)
            if self.check is not None:
                self.check(model)
        except Exception as exc:
            message = exc.message if isinstance(exc, ModelServeError) else f"{type(exc).__name__}: {exc}"
            self._failed[key] = version
            self.metrics.model_load_errors.inc()
            log.error("refused %s -> %s, keeping what serves now: %s", key, version, message)
            error = {"target": key, "version": version, "error": message, "at": time.time()}
            result.errors.append(error)
            self.recent_errors = [*self.recent_errors[-9:], error]
            return None
        self._failed.pop(key, None)
        return model

    async def sync(self, flag_versions: Iterable[str] = (), force: bool = False) -> SyncResult:
        """Bring loaded models in line with the aliases on disk and ``flag_versions``."""
        async with self._lock:
            result = SyncResult()
            on_disk = await asyncio.to_thread(self.repository.aliases)
            for alias in (self.primary, self.candidate):
                if alias:
                    await self._follow(alias, on_disk.get(alias), force, result)
            wanted = set(flag_versions)
            flag_models: dict[str, LoadedModel] = {}
            for version in sorted(wanted):
                model = await self._load(f"flag:{version}", version, force, result)
                if model is not None:
                    flag_models[version] = model
            self.flag_models = flag_models
            self.pool.keep(set(flag_models))
            self.last_sync = time.time()
            return result

    async def _follow(self, alias: str, target: str | None, force: bool, result: SyncResult) -> None:
        current = self.candidate_model if alias == self.candidate else self.pool.by_alias.get(alias)
        current_version = current.version if current is not None else None
        if target == current_version:
            return
        if target is None:
            if alias == self.primary:
                # Never stop serving: a missing primary link is an operator error, not "serve nothing".
                if self._failed.get(alias) != "<missing>":
                    self._failed[alias] = "<missing>"
                    log.error("alias %s has disappeared; still serving %s", alias, current_version)
                return
            self.candidate_model = None
            self._set_info(alias, current_version, None)
            self.on_candidate(None)
            result.changed.append({"alias": alias, "from": current_version, "to": None})
            log.info("alias %s removed (was %s)", alias, current_version)
            return
        model = await self._load(alias, target, force, result)
        if model is None:
            return
        if alias == self.candidate:
            self.candidate_model = model
            self.on_candidate(model)
        else:
            self.pool.assign(alias, model)
        self._set_info(alias, current_version, target)
        result.changed.append({"alias": alias, "from": current_version, "to": target})
        log.info("alias %s: %s -> %s", alias, current_version or "-", target)

    def _set_info(self, alias: str, old: str | None, new: str | None) -> None:
        # 0 rather than remove(): in multiprocess mode a removed child lingers in its mmap file.
        if old is not None and old != new:
            self.metrics.model_info.labels(alias, old).set(0)
        if new is not None:
            self.metrics.model_info.labels(alias, new).set(1)
