"""The label log of a real server process: feedback under load, then SIGTERM, nothing accepted is lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import orjson
import pytest

from harness import ServerProcess
from tests.support.metrics import metric_value
from tests.support.workspace import Workspace

pytestmark = pytest.mark.e2e


async def _load(url: str, seconds: float, clients: int) -> tuple[int, int]:
    """Labels answered 202 (counted per label) and requests refused, from concurrent clients."""
    accepted = refused = 0
    deadline = time.monotonic() + seconds

    async def client(c: httpx.AsyncClient, k: int) -> None:
        nonlocal accepted, refused
        i = 0
        while time.monotonic() < deadline:
            i += 1
            rid = f"c{k}-{i}"
            if i % 7 == 0:
                r = await c.post("/feedback", json={"request_id": rid, "label": "yes"})  # wrong type: 422
            elif i % 5 == 0:
                batch = [{"request_id": f"{rid}-{j}", "label": j % 2} for j in range(3)]
                r = await c.post("/feedback/batch", json={"labels": batch})
            else:
                r = await c.post("/feedback", json={"request_id": rid, "label": i % 2})
            if r.status_code == 202:
                accepted += r.json()["accepted"]
            else:
                refused += 1

    # One client with a connection per task: building a client per task would stall the loop for seconds.
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=10, trust_env=False, limits=limits) as c:
        await asyncio.gather(*(client(c, k) for k in range(clients)))
    return accepted, refused


def test_every_accepted_label_is_written_after_sigterm(workspace: Workspace, tmp_path: Path) -> None:
    """Concurrent feedback for a few seconds, then SIGTERM: label lines == labels answered 202."""
    log_dir = tmp_path / "log"
    env = workspace.env(
        MODELSERVE_LOG_DIR=str(log_dir),
        MODELSERVE_LOG_FLUSH_SECONDS="5",  # nothing written before SIGTERM unless batches fill
        MODELSERVE_LOG_BATCH_SIZE="20",
        MODELSERVE_LOG_MAX_BYTES="4096",  # several rotations during the run
        MODELSERVE_SHUTDOWN_DRAIN_SECONDS="0",
    )
    with ServerProcess(env, tmp_path / "server.log") as server:
        server.wait_ready()
        accepted, refused = asyncio.run(_load(server.url, seconds=3.0, clients=16))
        metrics = httpx.get(server.url + "/metrics").text
        code = server.stop()
    assert code == 0, server.output()
    assert accepted > 50 and refused > 0, (accepted, refused)
    files = sorted(log_dir.glob("labels-*.jsonl"))
    lines = [orjson.loads(line) for f in files for line in f.read_bytes().splitlines()]
    assert len(lines) == accepted
    assert len({x["request_id"] for x in lines}) == accepted
    assert all(x["kind"] == "label" and x["source"] == "api" for x in lines)
    assert len(files) > 1
    assert metric_value(metrics, "modelserve_feedback_total", {"outcome": "dropped"}) == 0
    assert metric_value(metrics, "modelserve_feedback_total", {"outcome": "invalid"}) == refused
