"""A real server under load while the production alias moves back and forth: no request fails."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest

from app.model.repository import Repository
from harness import ServerProcess
from tests.support.workspace import sample

pytestmark = pytest.mark.e2e

TOKEN = "e2e-admin-token-0123456789"


class TestHotSwap:
    def test_promote_and_rollback_under_load(self, workspace, tmp_path):
        """Four clients post for the whole run while production flips v2 ↔ v3 six times (polling and
        POST /admin/reload): zero failures, every answer from v2 or v3, and both seen."""
        body = sample(workspace)["request"]
        env = workspace.env(
            MODELSERVE_ALIAS_POLL_SECONDS="0.2", MODELSERVE_ADMIN_TOKEN=TOKEN, MODELSERVE_WARMUP_ITERATIONS="2"
        )
        repository = Repository(workspace.models_dir)
        with ServerProcess(env, tmp_path / "server.log") as srv:
            srv.wait_ready()
            stop = threading.Event()
            versions: Counter[str] = Counter()
            failures: list[str] = []
            lock = threading.Lock()

            def load() -> None:
                with httpx.Client(base_url=srv.url, timeout=10) as client:
                    while not stop.is_set():
                        try:
                            r = client.post("/predict", json=body)
                        except httpx.HTTPError as exc:
                            with lock:
                                failures.append(repr(exc))
                            continue
                        with lock:
                            if r.status_code != 200:
                                failures.append(f"{r.status_code} {r.text[:200]}")
                            else:
                                versions[r.json()["model_version"]] += 1

            clients = [threading.Thread(target=load) for _ in range(4)]
            for t in clients:
                t.start()
            try:
                auth = {"Authorization": f"Bearer {TOKEN}"}
                for i in range(6):
                    time.sleep(0.5)
                    if i % 2 == 0:
                        repository.promote("v3")
                    else:
                        repository.rollback()
                    if i % 3 == 0:  # sometimes the admin call, sometimes polling
                        r = httpx.post(srv.url + "/admin/reload", headers=auth, timeout=30)
                        assert r.status_code == 200, r.text
                time.sleep(0.7)
            finally:
                stop.set()
                for t in clients:
                    t.join(15)
            assert failures == [], failures[:5]
            assert set(versions) == {"v2", "v3"}, versions
            assert sum(versions.values()) > 100
            r = httpx.get(srv.url + "/admin/models", headers=auth)
            assert r.json()["aliases"]["production"] == "v2"  # three promotions, three rollbacks
            metrics = httpx.get(srv.url + "/metrics").text
            assert 'modelserve_model_info{alias="production",version="v2"} 1.0' in metrics
            assert 'modelserve_model_info{alias="production",version="v3"} 0.0' in metrics
