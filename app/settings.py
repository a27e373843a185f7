"""Service settings: environment variables prefixed ``MODELSERVE_``.

Every field carries a docstring; unsafe combinations are refused at start-up
(see ``Settings._check``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_DURATION_SECONDS = 10 * 365 * 86400
"""Longest duration any ``*_seconds`` (or ``*_ms``) setting may be: ten years."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODELSERVE_", extra="ignore", use_attribute_docstrings=True, allow_inf_nan=False
    )

    # --- serving -----------------------------------------------------------
    host: str = "127.0.0.1"
    """Address `modelserve serve` binds to."""
    port: int = Field(8000, ge=0, le=65535)
    """Port `modelserve serve` listens on."""
    workers: int = Field(1, ge=1, le=64)
    """Number of worker processes for `modelserve serve`."""
    grpc_port: int | None = Field(None, ge=0, le=65535)
    """Port of the gRPC server (Open Inference Protocol and gRPC health checking) on `host`; unset: no gRPC.
    Served by the single-process server only (refused with `workers` > 1)."""
    models_dir: Path = Path("models")
    """Directory holding model versions and alias symlinks."""
    alias: str = "production"
    """Alias of the primary model loaded at start-up."""
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    """Largest accepted request body for /predict (bytes); larger is 413."""
    max_batch_size: int = Field(1000, ge=1)
    """Largest number of instances accepted by /predict/batch."""
    batch_max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    """Largest accepted request body for /predict/batch (bytes)."""
    max_error_details: int = Field(50, ge=1, le=1000)
    """Most problems one error answer lists in ``detail``; a final entry counts the rest."""
    warmup_iterations: int = Field(20, ge=0)
    """Inference runs on the manifest sample before the model is marked ready."""
    warmup_delay_seconds: float = Field(0.0, ge=0)
    """Extra delay before marking ready (makes the not-ready window observable in tests)."""
    selfcheck_tolerance: float = Field(1e-4, gt=0)
    """Absolute tolerance between the warm-up output and the manifest's expected probability."""
    ort_intra_op_threads: int = Field(1, ge=1, le=256)
    """onnxruntime intra-op threads per session (1: no pool thread spinning on the other core)."""
    ort_inter_op_threads: int = Field(1, ge=1, le=256)
    """onnxruntime inter-op threads per session."""
    shutdown_drain_seconds: float = Field(0.0, ge=0)
    """After SIGTERM, seconds to keep serving with readiness 503 before the server stops accepting."""
    alias_poll_seconds: float = Field(2.0, ge=0)
    """How often the service checks alias symlinks for changes (0 disables polling)."""
    metrics_dir: Path | None = None
    """Prometheus multiprocess directory when workers > 1 (wiped at start; default: a temp dir per port)."""
    admin_token: str | None = None
    """Bearer token for /admin endpoints; unset disables them (404)."""

    # --- connections (HTTP server hardening) ----------------------------------
    header_read_timeout_seconds: float = Field(10.0, gt=0)
    """Longest a client may take to send a request's headers (seconds) before a 408 and the connection's close;
    on the gRPC port, to start HTTP/2 (preface and settings) before the connection is closed."""
    body_read_timeout_seconds: float = Field(10.0, gt=0)
    """Longest a client may take to send a request's body once its headers are in (seconds); then a 408."""
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    """Largest request line plus headers accepted (bytes); larger is answered 431 before it is parsed."""
    max_connections: int = Field(4096, ge=1)
    """Open connections per worker; past it the oldest one still sending its first request's headers is closed,
    or when every one is busy the new one gets a 503. Lowered to fit the descriptor limit at start. The gRPC port
    has its own cap of the same size (new connections past it are closed at once); when the descriptor limit
    binds, the two ports get half of it each."""

    # --- admission control (per worker; see app/api/admission.py) -------------
    max_in_flight: int = Field(64, ge=1)
    """Prediction requests one worker runs at once; more wait in line (up to `max_queue_ms`) for a slot."""
    max_queue_ms: float = Field(50.0, gt=0)
    """Longest a prediction request may wait, from when the server read it until its inference starts (ms);
    past it the request is refused with 503 and `Retry-After`, never run."""

    # --- features ----------------------------------------------------------
    feature_table: Path = Path("data/features.parquet")
    """Offline feature table (user_id + store features): the embedded compute source."""
    redis_url: str | None = None
    """Redis URL for the shared feature tier; unset means no Redis tier."""
    upstream_url: str | None = None
    """Upstream feature API base URL; unset means the offline table is the compute source."""
    memory_max_age_seconds: float = Field(60.0, ge=0)
    """How long a user's features stay fresh in the per-process memory tier (0: always ask further)."""
    memory_max_entries: int = Field(100_000, ge=0)
    """Users the memory tier holds per process; the oldest-written are evicted first (0: no memory tier)."""
    redis_connect_timeout_ms: float = Field(5.0, gt=0)
    """Redis connect timeout (ms): a Redis that does not accept at once is skipped, never waited for."""
    redis_timeout_ms: float = Field(5.0, gt=0)
    """Redis read timeout (ms) for one lookup; past it the lookup is a miss. Never retried."""
    redis_ttl_seconds: float = Field(300.0, ge=1)
    """Lifetime of features written back to Redis after a compute (seconds)."""
    redis_breaker_threshold: int = Field(5, ge=1)
    """Consecutive Redis failures that open the circuit (lookups then skip Redis)."""
    redis_breaker_cooldown_seconds: float = Field(1.0, gt=0)
    """Seconds an open Redis circuit waits before letting one probe through (half-open)."""
    feature_budget_ms: float = Field(100.0, gt=0)
    """Time a request may spend getting its store features (ms), Redis and upstream retries included."""
    feature_stale_seconds: float = Field(300.0, ge=0)
    """Stale-if-error window: when compute fails, features up to this long past their age are served."""
    feature_negative_ttl_seconds: float = Field(5.0, ge=0)
    """How long an unknown user (404 from compute) is remembered, per process, before asking again."""
    upstream_timeout_ms: float = Field(50.0, gt=0)
    """Timeout of one upstream attempt (ms); the request's feature budget bounds all attempts together."""
    upstream_max_retries: int = Field(3, ge=0)
    """Retries of one upstream call after the first attempt (retryable failures only)."""
    upstream_backoff_base_ms: float = Field(10.0, gt=0)
    """First backoff ceiling (ms); doubles per retry, the delay drawn uniformly below it (full jitter)."""
    upstream_backoff_max_ms: float = Field(50.0, gt=0)
    """Largest backoff ceiling (ms). A longer Retry-After from the upstream wins over it."""
    upstream_retry_500: bool = False
    """Also retry upstream 500s (429, 502, 503, 504, timeouts and connect errors always are)."""
    upstream_retry_ratio: float = Field(0.2, ge=0, le=1)
    """Retry budget: retries may add at most this fraction of upstream calls (token bucket)."""
    upstream_retry_burst: float = Field(10.0, ge=0)
    """Retry budget bucket size: retries allowed at once before the ratio limits them."""
    upstream_max_connections: int = Field(64, ge=1)
    """Connection pool size of the upstream HTTP client, per process."""

    @field_validator("*", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        # An empty path reads as ".", an empty host binds every interface: a variable set to "" is a mistake.
        if isinstance(value, str) and not value.strip():
            raise ValueError("is set but empty: unset it or give a value")
        return value

    @field_validator("*")
    @classmethod
    def _within_ten_years(cls, value: Any, info: ValidationInfo) -> Any:
        # Durations reach timers, thread waits and Redis TTLs, which overflow (and end a log writer) far beyond this.
        name = info.field_name or ""
        unit = 1000 if name.endswith("_ms") else 1 if name.endswith("_seconds") else 0
        if unit and isinstance(value, float) and value > MAX_DURATION_SECONDS * unit:
            raise ValueError(f"must be at most {MAX_DURATION_SECONDS * unit:g} ({MAX_DURATION_SECONDS // 86400} days)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and (scheme := urlsplit(value).scheme) not in ("redis", "rediss", "unix"):
            raise ValueError(f"must be a redis://, rediss:// or unix:// URL, not {_scheme(scheme)}")
        return value

    @field_validator("upstream_url")
    @classmethod
    def _upstream_scheme(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https"):
                raise ValueError(f"must be an http:// or https:// URL, not {_scheme(parts.scheme)}")
            if not parts.hostname:
                raise ValueError("must name a host (http://host[:port][/path])")
        return value

    @model_validator(mode="after")
    def _check_features(self) -> Settings:
        redis_ms = self.redis_connect_timeout_ms + self.redis_timeout_ms
        if self.redis_url is not None and redis_ms >= self.feature_budget_ms:
            raise ValueError(
                f"MODELSERVE_REDIS_CONNECT_TIMEOUT_MS + MODELSERVE_REDIS_TIMEOUT_MS ({redis_ms:g} ms) must be below "
                f"MODELSERVE_FEATURE_BUDGET_MS ({self.feature_budget_ms:g} ms): Redis alone could spend the budget"
            )
        if self.upstream_backoff_max_ms < self.upstream_backoff_base_ms:
            raise ValueError(
                f"MODELSERVE_UPSTREAM_BACKOFF_MAX_MS ({self.upstream_backoff_max_ms:g}) must be at least "
                f"MODELSERVE_UPSTREAM_BACKOFF_BASE_MS ({self.upstream_backoff_base_ms:g})"
            )
        return self

    # --- rollout -------------------------------------------------------------
    flags_file: Path | None = None
    """Rollout flags file (JSON or YAML), reloaded when it changes."""
    flags_poll_seconds: float = Field(1.0, ge=0)
    """How often the flags file is checked for changes (one `stat`; 0 disables; `POST /admin/reload` reads it too)."""
    candidate_alias: str = "candidate"
    """Alias of the model shadowed on every request (no such link: no shadow)."""
    shadow_enabled: bool = True
    """Shadow the candidate alias when it exists (false: never load or run a candidate)."""
    shadow_queue_size: int = Field(1024, ge=1)
    """Predictions waiting for the shadow; when full, new ones are dropped and counted, never waited for."""
    shadow_concurrency: int = Field(1, ge=1, le=16)
    """Shadow workers, each running one batch at a time in a thread (bounds the threads a hung candidate holds)."""
    shadow_batch_size: int = Field(128, ge=1)
    """Most queued predictions one shadow run takes together (spreads the thread hand-off over many)."""
    shadow_timeout_seconds: float = Field(1.0, gt=0)
    """Longest one shadow run may take; later it counts as a timeout and its thread is left to finish."""

    # --- telemetry ---------------------------------------------------------
    log_dir: Path | None = None
    """Directory of the prediction log and the label log (/feedback) beside it; unset disables both."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Level of the service's own log."""
    log_format: Literal["json", "text"] = "text"
    """Format of the service's own log (uvicorn's included): `text` for a terminal, `json` (one object a line
    with request, trace and model ids) for a log collector."""

    # --- prediction log ------------------------------------------------------
    log_max_bytes: int = Field(64 * 1024 * 1024, ge=4096)
    """Rotate a prediction log file once it reaches this many bytes."""
    log_max_age_seconds: float = Field(3600.0, gt=0)
    """Rotate a prediction log file once it is this old (seconds)."""
    log_queue_size: int = Field(100_000, ge=1)
    """Records the prediction log may hold in memory; beyond it records are dropped and counted."""
    log_batch_size: int = Field(1000, ge=1)
    """The log writer wakes early and writes once this many records are queued."""
    log_flush_seconds: float = Field(0.5, gt=0)
    """Longest a queued record waits before the log writer writes it (seconds)."""
    log_user_id: Literal["plain", "hash"] = "plain"
    """How user ids are logged: as sent, or as a keyed hash (HMAC-SHA256 with `log_user_id_key`)."""
    log_user_id_key: SecretStr | None = None
    """Secret key for `log_user_id=hash` (at least 16 characters); never logged."""

    # --- prediction log: durability, retention, duplicates ---------------------
    log_failure_policy: Literal["serve", "not_ready"] = "serve"
    """When the log cannot write (disk full, unwritable): keep serving and count the dropped records
    (`serve`), or also report not ready until it writes again (`not_ready`)."""
    log_retention_seconds: float = Field(0.0, ge=0)
    """Delete rotated prediction log files older than this (seconds; 0 keeps them)."""
    log_retention_bytes: int = Field(0, ge=0)
    """Delete the oldest rotated prediction log files while all together exceed this (bytes; 0: no limit)."""
    log_duplicate_window: int = Field(10_000, ge=0)
    """Recent request ids per process checked for duplicates (`duplicate_request_ids_total`; 0 disables)."""
    log_sample_rate: float = Field(1.0, ge=0, le=1)
    """Fraction of prediction records written, chosen by a seeded hash of the request id (a retry agrees);
    shadow records are always written. Labels can only join predictions that were written."""

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.grpc_port is not None and self.workers > 1:
            raise ValueError("MODELSERVE_GRPC_PORT is served by a single process: it needs MODELSERVE_WORKERS=1")
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise ValueError("MODELSERVE_ADMIN_TOKEN must be at least 16 characters")
        if self.log_user_id == "hash" and (
            self.log_user_id_key is None or len(self.log_user_id_key.get_secret_value()) < 16
        ):
            raise ValueError("MODELSERVE_LOG_USER_ID=hash needs MODELSERVE_LOG_USER_ID_KEY of at least 16 characters")
        return self


def _scheme(scheme: str) -> str:
    # Only the scheme is quoted: the rest of a URL may carry a password.
    return f"a {scheme[:16]!r} one" if scheme else "one without a scheme"


def describe(exc: ValidationError) -> str:
    """One line for a refused setting, naming its ``MODELSERVE_`` variable (the secret values never echoed)."""
    first = exc.errors(include_url=False, include_input=False)[0]
    message = first["msg"].removeprefix("Value error, ")
    more = len(exc.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    if not first["loc"]:  # a combination of settings: the message names them
        return f"invalid settings: {message}{tail}"
    return f"invalid setting MODELSERVE_{str(first['loc'][0]).upper()}: {message}{tail}"
