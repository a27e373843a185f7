"""Shared fixtures: a trained workspace (models + feature table) per test session.

Models are trained once per session into a temporary directory with a small
data set; tests that change the registry get their own copy (``workspace``).
Helpers for using a workspace live in ``tests.support.workspace``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.workspace import Workspace


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
