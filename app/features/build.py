"""Builds the feature server and its tiers from settings (called by ``app.container``).

``store_features`` are the manifest's store features (their dtypes check what
Redis and the upstream answer, ``app.features.schema``); bare names also work,
checking only that each is a finite JSON scalar.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from app.features.base import FeatureSource
from app.features.memory import MemoryTier
from app.features.schema import StoreFeatures, StoreSchema, feature_names
from app.features.server import FeatureServer
from app.features.table import OfflineTable
from app.settings import Settings
from app.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from app.features.redis_tier import RedisTier

log = logging.getLogger("modelserve.features")

# The Redis and upstream tiers are imported only when configured: redis-py and
# httpx cost ~0.5 s of start-up that the embedded default (and every batch job)
# does not need.


def compute_source(s: Settings, metrics: Metrics, store_features: StoreFeatures) -> FeatureSource:
    """The upstream API when ``upstream_url`` is set, else the offline table (loaded now).

    A model without store features never looks a user up: when the table file
    does not exist, it serves from an empty one instead of failing start-up.
    """
    if s.upstream_url:
        from app.features.upstream import RetryBudget, UpstreamSource

        return UpstreamSource(
            s.upstream_url,
            metrics,
            budget=s.feature_budget_ms / 1000,
            attempt_timeout=s.upstream_timeout_ms / 1000,
            max_retries=s.upstream_max_retries,
            backoff_base=s.upstream_backoff_base_ms / 1000,
            backoff_cap=s.upstream_backoff_max_ms / 1000,
            retry_500=s.upstream_retry_500,
            retry_budget=RetryBudget(s.upstream_retry_ratio, s.upstream_retry_burst),
            max_connections=s.upstream_max_connections,
            schema=StoreSchema(store_features),
        )
    if not store_features and not Path(s.feature_table).exists():
        log.info("no feature table at %s: the model needs no store features", s.feature_table)
        return OfflineTable({})
    table = OfflineTable.load(s.feature_table)
    table.require(feature_names(store_features))
    return table


def redis_tier(s: Settings, metrics: Metrics, store_features: StoreFeatures) -> RedisTier | None:
    if not s.redis_url:
        return None
    from app.features.breaker import CircuitBreaker
    from app.features.redis_tier import RedisTier, connect, key_prefix

    connect_timeout, read_timeout = s.redis_connect_timeout_ms / 1000, s.redis_timeout_ms / 1000
    breaker = CircuitBreaker(
        s.redis_breaker_threshold,
        s.redis_breaker_cooldown_seconds,
        on_change=lambda state: metrics.circuit_state.set(int(state)),
    )
    return RedisTier(
        connect(s.redis_url, connect_timeout, read_timeout),
        breaker,
        metrics,
        prefix=key_prefix(feature_names(store_features)),
        ttl=s.redis_ttl_seconds,
        timeout=connect_timeout + read_timeout,
        schema=StoreSchema(store_features),
    )


def build_feature_server(s: Settings, metrics: Metrics, store_features: StoreFeatures) -> FeatureServer:
    memory = MemoryTier(
        max_age=s.memory_max_age_seconds,
        max_entries=s.memory_max_entries,
        stale_window=s.feature_stale_seconds,
        negative_ttl=s.feature_negative_ttl_seconds,
    )
    return FeatureServer(
        compute_source(s, metrics, store_features),
        metrics,
        memory=memory,
        redis=redis_tier(s, metrics, store_features),
        budget=s.feature_budget_ms / 1000,
    )
