"""The real `modelserve serve` process: warm-up before readiness, predict, SIGTERM."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from harness import ServerProcess
from tests.support.workspace import manifest

pytestmark = pytest.mark.e2e


class TestServeProcess:
    def test_ready_only_after_warmup_then_clean_exit(self, trained, tmp_path):
        """Readiness is 503 while warming, 200 after; predictions work; SIGTERM exits 0."""
        sample = manifest(trained)["sample"]
        env = trained.env(MODELSERVE_WARMUP_DELAY_SECONDS="2")
        with ServerProcess(env, tmp_path / "server.log") as srv:
            srv.wait_live()
            r = httpx.get(srv.url + "/health/ready")
            assert r.status_code == 503
            assert r.headers["retry-after"] == "1"
            assert httpx.post(srv.url + "/predict", json=sample["request"]).status_code == 503
            srv.wait_ready()
            r = httpx.post(srv.url + "/predict", json=sample["request"])
            assert r.status_code == 200
            assert r.json()["probability"] == pytest.approx(sample["expected"]["probability"], abs=1e-5)
            srv.signal(signal.SIGTERM)
            assert srv.proc.wait(20) == 0
            assert "Application shutdown complete" in srv.output()

    def test_readiness_503_while_draining(self, trained, tmp_path):
        """After SIGTERM readiness turns 503 at once while requests are still answered."""
        sample = manifest(trained)["sample"]
        env = trained.env(MODELSERVE_SHUTDOWN_DRAIN_SECONDS="2")
        with ServerProcess(env, tmp_path / "server.log") as srv:
            srv.wait_ready()
            srv.signal(signal.SIGTERM)
            time.sleep(0.3)
            assert httpx.get(srv.url + "/health/ready").status_code == 503
            assert httpx.get(srv.url + "/health/live").status_code == 200
            assert httpx.post(srv.url + "/predict", json=sample["request"]).status_code == 200
            assert srv.proc.wait(20) == 0

    def test_bad_model_never_ready(self, workspace, tmp_path):
        """A tampered primary model makes the process exit non-zero instead of serving."""
        (workspace.models_dir / "v2" / "model.onnx").write_bytes(b"junk")
        srv = ServerProcess(workspace.env(), tmp_path / "server.log")
        assert srv.proc.wait(30) != 0
        srv.stop()
        assert "checksum mismatch" in srv.output()
