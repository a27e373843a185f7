"""The short soak: a real server under load through every fault phase (``python -m soak.run --short``)."""

from __future__ import annotations

import pytest

from soak.context import SHORT
from soak.run import report, run_soak
from tests.support.workspace import Workspace

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


class TestSoak:
    @pytest.mark.timeout(240)
    async def test_short_soak_passes_every_phase_that_runs(self, workspace: Workspace) -> None:
        """Every phase's assertions hold; phases without their feature are reported as skipped, with why."""
        results = await run_soak(SHORT, workspace.root)
        text = report(results, SHORT)
        print(text)
        failed = [f"{r.name}: {c.what} ({c.detail})" for r in results for c in r.checks if not c.ok]
        assert not failed, "\n".join(failed) + "\n\n" + text
        assert results[0].name == "baseline" and results[-1].name == "sigterm"
