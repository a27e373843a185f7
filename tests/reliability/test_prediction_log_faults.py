"""The prediction log under storage faults, against a real server process.

A full disk (a 256 KiB tmpfs), a read-only log directory and a file-size
limit (RLIMIT_FSIZE): every answered prediction is either in the log or
counted in ``modelserve_prediction_log_dropped_total{reason}``, the failure
is visible (write errors, free bytes, readiness under the ``not_ready``
policy), and once space returns every line of every file parses (a torn
write is never glued to the next record).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from harness import ServerProcess
from tests.support.metrics import metric_value
from tests.support.workspace import Workspace

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A private tmpfs at ``path``; skips the test where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, capture_output=True)


def sample_request(ws: Workspace) -> dict[str, Any]:
    return json.loads((ws.models_dir / "production" / "manifest.json").read_text())["sample"]["request"]


def predict(server: ServerProcess, body: dict[str, Any], n: int) -> int:
    """Send ``n`` /predict requests one after another; the number answered 200."""
    ok = 0
    with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as c:
        for _ in range(n):
            if c.post("/predict", json=body).status_code == 200:
                ok += 1
    return ok


def metrics(server: ServerProcess) -> str:
    return httpx.get(server.url + "/metrics", timeout=5).text


def accounted(text: str) -> float:
    """Records written plus records counted as dropped (any reason)."""
    return metric_value(text, "modelserve_prediction_log_records_total") + metric_value(
        text, "modelserve_prediction_log_dropped_total"
    )


def wait_accounted(server: ServerProcess, answered: int, timeout: float = 15.0) -> str:
    """/metrics once every answered prediction is written or counted (or the last one seen)."""
    deadline = time.monotonic() + timeout
    text = metrics(server)
    while accounted(text) < answered and time.monotonic() < deadline:
        time.sleep(0.1)
        text = metrics(server)
    return text


def log_lines(log_dir: Path) -> tuple[int, list[bytes]]:
    """(parseable lines, unparseable lines) over every log file."""
    good, bad = 0, []
    for path in sorted(log_dir.glob("predictions-*.jsonl")):
        for line in path.read_bytes().splitlines():
            try:
                orjson.loads(line)
                good += 1
            except orjson.JSONDecodeError:
                bad.append(line)
    return good, bad


def server_env(ws: Workspace, log_dir: Path, **extra: str) -> dict[str, str]:
    settings = {
        "MODELSERVE_LOG_DIR": str(log_dir),
        "MODELSERVE_LOG_FLUSH_SECONDS": "0.05",
        "MODELSERVE_LOG_BATCH_SIZE": "20",
        "MODELSERVE_LOG_MAX_BYTES": "65536",
        "MODELSERVE_WARMUP_ITERATIONS": "2",
        "MODELSERVE_ALIAS_POLL_SECONDS": "0",
        "MODELSERVE_SHADOW_ENABLED": "false",  # one record per answered prediction
    }
    return ws.env(**{**settings, **extra})


def ready_status(server: ServerProcess) -> int:
    return httpx.get(server.url + "/health/ready", timeout=5).status_code


class TestFullDisk:
    def test_every_prediction_logged_or_counted_and_no_glued_record(self, trained: Workspace, tmp_path: Path) -> None:
        """On a full 256 KiB tmpfs every answer is logged or counted; after space returns every line parses."""
        body = sample_request(trained)
        with tmpfs(tmp_path / "log", "size=256k") as log_dir:
            env = server_env(trained, log_dir)
            with ServerProcess(env, tmp_path / "server.log") as server:
                server.wait_ready()
                answered = predict(server, body, 1500)
                text = wait_accounted(server, answered)
                written = metric_value(text, "modelserve_prediction_log_records_total")
                dropped = metric_value(text, "modelserve_prediction_log_dropped_total")
                good, _ = log_lines(log_dir)
                print(  # the before/after figures quoted in RELIABILITY.md
                    f"full disk: answered={answered} lines={good} records_total={written} dropped_total={dropped} "
                    f"unlogged={1 - good / answered:.1%}"
                )
                assert good < answered, "the tmpfs did not fill up: the test proves nothing"
                assert good == written
                assert written + dropped == answered, server.output()[-2000:]
                assert metric_value(text, "modelserve_prediction_log_dropped_total", {"reason": "write_error"}) > 0
                assert metric_value(text, "modelserve_prediction_log_write_errors_total", {"error": "ENOSPC"}) > 0
                assert metric_value(text, "modelserve_prediction_log_free_bytes") < 64 * 1024
                assert metric_value(text, "modelserve_prediction_log_writable") == 0
                assert ready_status(server) == 200  # default policy: keep serving, count

                remount(log_dir, "size=8m")
                more = predict(server, body, 300)
                text = wait_accounted(server, answered + more)
                assert accounted(text) == answered + more
                deadline = time.monotonic() + 10
                while metric_value(text, "modelserve_prediction_log_writable") != 1 and time.monotonic() < deadline:
                    time.sleep(0.1)
                    text = metrics(server)
                assert metric_value(text, "modelserve_prediction_log_writable") == 1
                assert metric_value(text, "modelserve_prediction_log_records_total") >= written + more
                good_after, bad = log_lines(log_dir)
                assert bad == [], f"{len(bad)} unparseable line(s), e.g. {bad[0][:200]!r}"
                assert good_after == metric_value(text, "modelserve_prediction_log_records_total")
                assert server.stop() == 0

    def test_not_ready_policy_reports_not_ready_while_the_log_fails(self, trained: Workspace, tmp_path: Path) -> None:
        """With MODELSERVE_LOG_FAILURE_POLICY=not_ready, readiness is 503 while full and 200 once space returns."""
        body = sample_request(trained)
        with tmpfs(tmp_path / "log", "size=256k") as log_dir:
            env = server_env(trained, log_dir, MODELSERVE_LOG_FAILURE_POLICY="not_ready")
            with ServerProcess(env, tmp_path / "server.log") as server:
                server.wait_ready()
                answered = predict(server, body, 1500)
                wait_accounted(server, answered)
                response = httpx.get(server.url + "/health/ready", timeout=5)
                assert response.status_code == 503, response.text
                assert "prediction log" in response.json()["error"]
                remount(log_dir, "size=8m")
                server.wait_ready(timeout=15)  # recovers on its own, with no traffic to prove it
                assert ready_status(server) == 200


class TestUnwritableDirectory:
    @contextmanager
    def read_only_dir(self, path: Path) -> Iterator[Path]:
        if os.geteuid() != 0:  # permissions stop a non-root writer
            path.mkdir()
            path.chmod(0o555)
            try:
                yield path
            finally:
                path.chmod(0o755)
            return
        with tmpfs(path, "size=1m,ro") as mounted:  # root ignores permissions, not a read-only mount
            yield mounted

    def make_writable(self, path: Path) -> None:
        if os.geteuid() != 0:
            path.chmod(0o755)
        else:
            remount(path, "rw")

    def test_unwritable_log_directory_is_counted_then_recovers(self, trained: Workspace, tmp_path: Path) -> None:
        """A read-only log directory: every answer counted as dropped, errors exposed; writable again, logged again."""
        body = sample_request(trained)
        with (
            self.read_only_dir(tmp_path / "log") as log_dir,
            ServerProcess(server_env(trained, log_dir), tmp_path / "server.log") as server,
        ):
            server.wait_ready()
            answered = predict(server, body, 200)
            text = wait_accounted(server, answered)
            dropped = metric_value(text, "modelserve_prediction_log_dropped_total", {"reason": "write_error"})
            print(f"unwritable dir: answered={answered} dropped_total={dropped}")
            assert dropped == answered, server.output()[-2000:]
            assert metric_value(text, "modelserve_prediction_log_write_errors_total") > 0
            assert metric_value(text, "modelserve_prediction_log_writable") == 0
            assert ready_status(server) == 200

            self.make_writable(log_dir)
            more = predict(server, body, 50)
            text = wait_accounted(server, answered + more)
            assert metric_value(text, "modelserve_prediction_log_records_total") == more
            good, bad = log_lines(log_dir)
            assert (good, bad) == (more, [])
            assert server.stop() == 0

    def test_feedback_is_refused_while_the_label_log_cannot_write(self, trained: Workspace, tmp_path: Path) -> None:
        """Labels are not answered 202 and dropped: once the label log is known to fail, 503 + Retry-After."""
        label = {"request_id": "r-1", "label": 1}
        with (
            self.read_only_dir(tmp_path / "log") as log_dir,
            ServerProcess(server_env(trained, log_dir), tmp_path / "server.log") as server,
            httpx.Client(base_url=server.url, timeout=10, trust_env=False) as client,
        ):
            server.wait_ready()
            accepted, refused = 0, None
            deadline = time.monotonic() + 15
            while refused is None and time.monotonic() < deadline:
                r = client.post("/feedback", json=label)
                if r.status_code == 202:
                    accepted += 1  # sent before the writer first failed: counted as dropped
                    time.sleep(0.1)
                else:
                    refused = r
            assert refused is not None and refused.status_code == 503, refused and refused.text
            assert "label log cannot write" in refused.json()["error"]
            assert refused.headers["retry-after"] == "2"
            batch = client.post("/feedback/batch", json={"labels": [label, {"request_id": "r-2", "label": 0}]})
            assert batch.status_code == 503, batch.text
            text = metrics(server)
            assert metric_value(text, "modelserve_label_log_writable") == 0
            assert metric_value(text, "modelserve_feedback_total", {"outcome": "accepted"}) == accepted
            assert metric_value(text, "modelserve_feedback_total", {"outcome": "dropped"}) == accepted

            self.make_writable(log_dir)
            deadline = time.monotonic() + 15
            while (r := client.post("/feedback", json=label)).status_code != 202 and time.monotonic() < deadline:
                time.sleep(0.1)  # the writer's probe finds the directory writable again
            assert r.status_code == 202, r.text
            assert server.stop() == 0
            files = list(log_dir.glob("labels-*.jsonl"))  # read before a root run's tmpfs is unmounted
            lines = [json.loads(line) for f in files for line in f.read_bytes().splitlines()]
        assert [(x["request_id"], x["label"]) for x in lines] == [("r-1", 1)]


FSIZE_SCRIPT = """
import resource, sys, orjson
from pathlib import Path
from app.predictor import PredictionRecord
from app.telemetry.metrics import Metrics
from app.telemetry.prediction_log import PredictionLog

resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
metrics = Metrics()
plog = PredictionLog(Path(sys.argv[1]), metrics, max_bytes=1 << 30, batch_size=7)
for i in range(int(sys.argv[3])):
    plog.listener(PredictionRecord(
        request_id=f"r-{i}", model_version="v2", prediction=1, probability=0.5, user_id="u-1",
        features={"amount": 1.5, "device": "ios"}, request_features={}, latency=0.001, tier="table",
    ))
    if i % 7 == 6:
        plog._drain()
plog.close_sync()
values = {}
for fam in metrics.registry.collect():
    for s in fam.samples:
        if s.name.startswith("modelserve_prediction_log_") and not s.name.endswith("_created"):
            values[s.name + str(sorted(s.labels.items()))] = s.value
print(orjson.dumps(values).decode())
"""


class TestFileSizeLimit:
    def test_file_size_limit_drops_are_counted_and_lines_stay_whole(self, tmp_path: Path) -> None:
        """Under RLIMIT_FSIZE (EFBIG mid-batch), records are written or counted and no line is torn or glued."""
        log_dir = tmp_path / "log"
        n, limit = 2000, 16 * 1024
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(
            [sys.executable, "-c", FSIZE_SCRIPT, str(log_dir), str(limit), str(n)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        values = json.loads(proc.stdout.strip().splitlines()[-1])
        written = sum(v for k, v in values.items() if k.startswith("modelserve_prediction_log_records_total"))
        dropped = sum(v for k, v in values.items() if k.startswith("modelserve_prediction_log_dropped_total"))
        good, bad = log_lines(log_dir)
        print(f"fsize limit: submitted={n} lines={good} records_total={written} dropped_total={dropped} bad={len(bad)}")
        assert bad == []
        assert good == written
        assert written + dropped == n
        assert dropped > 0
        assert all(p.stat().st_size <= limit for p in log_dir.glob("predictions-*.jsonl"))


class TestRetention:
    def test_retention_bytes_bounds_the_log_directory(self, trained: Workspace, tmp_path: Path) -> None:
        """With MODELSERVE_LOG_RETENTION_BYTES, a client predicting flat out cannot grow the directory past it."""
        body = sample_request(trained)
        log_dir = tmp_path / "log"
        limit = 64 * 1024
        env = server_env(trained, log_dir, MODELSERVE_LOG_MAX_BYTES="8192", MODELSERVE_LOG_RETENTION_BYTES=str(limit))
        with ServerProcess(env, tmp_path / "server.log") as server:
            server.wait_ready()
            answered = predict(server, body, 1500)
            text = wait_accounted(server, answered)
            total = sum(p.stat().st_size for p in log_dir.glob("predictions-*.jsonl"))
            deleted = metric_value(text, "modelserve_prediction_log_files_deleted_total", {"reason": "bytes"})
            written = metric_value(text, "modelserve_prediction_log_records_total")
            print(f"retention: answered={answered} records={written} bytes_on_disk={total} files_deleted={deleted}")
            assert written == answered
            assert deleted > 0
            assert total <= limit + 8192 + 20 * 1024  # the limit, plus the open file and one batch past rotation
            assert server.stop() == 0
