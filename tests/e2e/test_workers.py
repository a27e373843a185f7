"""Several workers: shared socket, multiprocess metrics, dead workers replaced, drained exit."""

from __future__ import annotations

import os
import signal
import time

import httpx
import psutil
import pytest

from harness import ServerProcess
from tests.support.metrics import metric_value
from tests.support.workspace import manifest

pytestmark = pytest.mark.e2e


def total(text: str, name: str, **labels: str) -> float:
    return metric_value(text, name, labels)


def worker_pids(srv: ServerProcess) -> set[int]:
    """Worker processes (spawned children), not multiprocessing's resource tracker."""
    out = set()
    for child in psutil.Process(srv.proc.pid).children():
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:  # exited (or a zombie not yet reaped)
            continue
        if "spawn_main" in cmd:
            out.add(child.pid)
    return out


class TestWorkers:
    def test_metrics_aggregate_and_survive_a_dead_worker(self, trained, tmp_path):
        """predictions_total sums over workers, keeps a killed worker's counts, and the worker is replaced."""
        sample = manifest(trained)["sample"]
        env = trained.env(MODELSERVE_METRICS_DIR=str(tmp_path / "metrics"))
        with ServerProcess(env, tmp_path / "server.log", args=["--workers", "2"]) as srv:
            srv.wait_ready()
            with httpx.Client(base_url=srv.url) as client:
                # New connections spread over the workers; every answer counts once.
                for _ in range(40):
                    assert httpx.post(srv.url + "/predict", json=sample["request"]).status_code == 200
                text = client.get("/metrics").text
                assert total(text, "modelserve_predictions_total", model_version="v2") == 40
                assert total(text, "modelserve_prediction_latency_seconds_count", model_version="v2") == 40
                pids = worker_pids(srv)
                assert len(pids) >= 2
                victim = sorted(pids)[0]
                os.kill(victim, signal.SIGKILL)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    now = worker_pids(srv)
                    if victim not in now and len(now) >= 2:
                        break
                    time.sleep(0.2)
                srv.wait_ready()
                # The replacement takes connections only once warm: no 503s from it.
                for _ in range(10):
                    assert httpx.post(srv.url + "/predict", json=sample["request"]).status_code == 200
                text = client.get("/metrics").text
                assert total(text, "modelserve_predictions_total", model_version="v2") == 50
            srv.signal(signal.SIGTERM)
            assert srv.proc.wait(30) == 0, srv.output()

    def test_metrics_dir_wiped_at_start(self, trained, tmp_path):
        """Stale multiprocess files from an earlier run never add to this run's counters."""
        mdir = tmp_path / "metrics"
        mdir.mkdir()
        (mdir / "counter_999999.db").write_bytes(b"stale")
        env = trained.env(MODELSERVE_METRICS_DIR=str(mdir))
        with ServerProcess(env, tmp_path / "server.log", args=["--workers", "2"]) as srv:
            srv.wait_ready()
            assert not (mdir / "counter_999999.db").exists()
            text = httpx.get(srv.url + "/metrics").text
            assert total(text, "modelserve_predictions_total") == 0
