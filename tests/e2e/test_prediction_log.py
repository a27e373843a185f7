"""The prediction log of a real server process: under load, then SIGTERM, nothing is lost."""

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


async def _load(
    url: str, bodies: list[dict[str, object]], answers: int, clients: int, cap_seconds: float = 60.0
) -> tuple[int, int]:
    """Concurrent clients until ``answers`` requests were answered (or, on a starved machine, the cap)."""
    ok = other = 0
    deadline = time.monotonic() + cap_seconds

    async def client(k: int) -> None:
        nonlocal ok, other
        async with httpx.AsyncClient(base_url=url, timeout=10, trust_env=False) as c:
            i = k
            while ok + other < answers and time.monotonic() < deadline:
                r = await c.post("/predict", json=bodies[i % len(bodies)])
                if r.status_code == 200:
                    ok += 1
                else:
                    other += 1
                i += clients

    await asyncio.gather(*(client(k) for k in range(clients)))
    return ok, other


def _records(log_dir: Path) -> list[dict[str, object]]:
    out = []
    for path in sorted(log_dir.glob("predictions-*.jsonl")):
        out.extend(orjson.loads(line) for line in path.read_bytes().splitlines())
    return out


class TestPredictionLogUnderLoad:
    def test_every_answered_prediction_is_logged_after_sigterm(self, workspace: Workspace, tmp_path: Path) -> None:
        """Concurrent clients for 200 answers, then SIGTERM: logged predictions == 200 answers."""
        import pandas as pd

        from app.training.data import generate_requests

        users = pd.read_parquet(workspace.feature_table)
        bodies = generate_requests(300, seed=3, users_df=users)
        bodies.insert(0, {"user_id": "u-00001", "features": {"amount": "nope"}})  # a 422: never logged
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
            ok, other = asyncio.run(_load(server.url, bodies, answers=200, clients=16))
            metrics = httpx.get(server.url + "/metrics").text
            code = server.stop()
        assert code == 0, server.output()
        assert ok > 50 and other > 0  # the first client sends the 422 body first
        records = _records(log_dir)
        predictions = [r for r in records if r["kind"] == "prediction"]
        assert len(predictions) == ok
        assert len({r["request_id"] for r in predictions}) == ok
        assert len(list(log_dir.glob("predictions-*.jsonl"))) > 1
        first = predictions[0]
        assert set(first) >= {"timestamp", "request_id", "model_version", "user_id", "features", "probability"}
        assert set(first["features"]) >= {"amount", "device", "age", "country"}  # request + store features
        assert metric_value(metrics, "modelserve_prediction_log_dropped_total") == 0
