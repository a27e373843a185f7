"""The promotion gate's thresholds (a light module: the CLI reads the defaults for its --help)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateLimits:
    min_shadowed: int = 1000
    min_labelled: int = 200
    max_error_rate: float = 0.01
    latency_ratio: float = 1.5
    margin: float = 0.01
    """Non-inferiority margin in the decisive metric's units (ROC AUC, accuracy), or for RMSE as a fraction
    of the primary's RMSE."""
