"""A trained workspace (models + feature table) and what tests read from it.

``tests/conftest.py`` trains one per session (fixture ``trained``) and hands
out private copies (fixture ``workspace``); these are the helpers around it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def manifest(ws: Workspace | Path, version: str = "v2") -> dict[str, Any]:
    """The parsed ``manifest.json`` of a version (or alias, e.g. ``production``) in a workspace or workspace root."""
    root = ws.root if isinstance(ws, Workspace) else ws
    return dict(json.loads((root / "models" / version / "manifest.json").read_text()))


def sample(ws: Workspace | Path, version: str = "v2") -> dict[str, Any]:
    """The manifest's ``sample``: a ``request``, the ``row`` it resolves to and the ``expected`` output."""
    return dict(manifest(ws, version)["sample"])


@contextmanager
def serving(app: Any, timeout: float = 60, raise_server_exceptions: bool = True) -> Iterator[TestClient]:
    """TestClient with the lifespan running, returned once start-up has finished (ready or failed)."""
    with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
        deadline = time.monotonic() + timeout
        while not app.state.startup.done():
            if time.monotonic() > deadline:
                raise TimeoutError("start-up did not finish")
            time.sleep(0.01)
        yield client
