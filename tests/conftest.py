"""Shared fixtures: a trained workspace (models + feature table) per test session.

Models are trained once per session into a temporary directory with a small
data set; tests that change the registry get their own copy (``workspace``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.settings import Settings


@dataclass
class Workspace:
    root: Path

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def feature_table(self) -> Path:
        return self.root / "data" / "features.parquet"

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "models_dir": self.models_dir,
            "feature_table": self.feature_table,
            "warmup_iterations": 2,
            "alias_poll_seconds": 0,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "MODELSERVE_MODELS_DIR": str(self.models_dir),
            "MODELSERVE_FEATURE_TABLE": str(self.feature_table),
        }
        env.update(overrides)
        return env


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    from app.training.train import train

    root = tmp_path_factory.mktemp("trained")
    train(root / "models", root / "data", seed=7, n_users=400, n_events=6000)
    return Workspace(root)


@pytest.fixture
def workspace(trained: Workspace, tmp_path: Path) -> Workspace:
    """A private copy of the trained workspace that a test may change."""
    root = tmp_path / "ws"
    shutil.copytree(trained.root, root, symlinks=True)
    return Workspace(root)


@contextmanager
def serving(app: Any, timeout: float = 60) -> Iterator[TestClient]:
    """TestClient with the lifespan running, returned once start-up has finished (ready or failed)."""
    with TestClient(app) as client:
        deadline = time.monotonic() + timeout
        while not app.state.startup.done():
            if time.monotonic() > deadline:
                raise TimeoutError("start-up did not finish")
            time.sleep(0.01)
        yield client
