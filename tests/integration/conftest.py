"""Fixtures of the integration tests: published models of every task (built once per session)."""

from __future__ import annotations

import pytest

from tests.support.task_models import TaskModels, build


@pytest.fixture(scope="session")
def task_models(tmp_path_factory: pytest.TempPathFactory) -> TaskModels:
    return build(tmp_path_factory.mktemp("task-models"))
