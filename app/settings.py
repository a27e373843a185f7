"""Service settings: environment variables prefixed ``MODELSERVE_``.

Every field carries a docstring; unsafe combinations are refused at start-up
(see ``Settings._check``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELSERVE_", extra="ignore", use_attribute_docstrings=True)

    # --- serving -----------------------------------------------------------
    host: str = "127.0.0.1"
    """Address `modelserve serve` binds to."""
    port: int = Field(8000, ge=0, le=65535)
    """Port `modelserve serve` listens on."""
    workers: int = Field(1, ge=1, le=64)
    """Number of worker processes for `modelserve serve`."""
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
    warmup_iterations: int = Field(20, ge=0)
    """Inference runs on the manifest sample before the model is marked ready."""
    warmup_delay_seconds: float = Field(0.0, ge=0)
    """Extra delay before marking ready (makes the not-ready window observable in tests)."""
    selfcheck_tolerance: float = Field(1e-4, gt=0)
    """Absolute tolerance between the warm-up output and the manifest's expected probability."""
    ort_intra_op_threads: int = Field(1, ge=1)
    """onnxruntime intra-op threads per session (1: no pool thread spinning on the other core)."""
    ort_inter_op_threads: int = Field(1, ge=1)
    """onnxruntime inter-op threads per session."""
    shutdown_drain_seconds: float = Field(0.0, ge=0)
    """After SIGTERM, seconds to keep serving with readiness 503 before the server stops accepting."""
    alias_poll_seconds: float = Field(2.0, ge=0)
    """How often the service checks alias symlinks for changes (0 disables polling)."""
    admin_token: str | None = None
    """Bearer token for /admin endpoints; unset disables them (404)."""

    # --- features ----------------------------------------------------------
    feature_table: Path = Path("data/features.parquet")
    """Offline feature table (user_id + store features): the embedded compute source."""
    redis_url: str | None = None
    """Redis URL for the shared feature tier; unset means no Redis tier."""
    upstream_url: str | None = None
    """Upstream feature API base URL; unset means the offline table is the compute source."""

    # --- rollout -------------------------------------------------------------
    flags_file: Path | None = None
    """Rollout flags file (JSON or YAML), reloaded when it changes."""

    # --- telemetry ---------------------------------------------------------
    log_dir: Path | None = None
    """Directory of the prediction log; unset disables the log."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Level of the service's own log."""

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise ValueError("MODELSERVE_ADMIN_TOKEN must be at least 16 characters")
        return self
