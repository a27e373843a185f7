"""``modelserve shadow-report`` over prediction log files."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from app.cli import main
from app.jobs.shadow_report import compute_shadow_report
from app.main import create_app
from tests.integration.test_rollout_api import sample, wait_for
from tests.support.workspace import serving


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def shadow_line(ts, outcome="ok", diff=0.05, labels=(1, 1), latency=(0.002, 0.001)):
    ok = outcome == "ok"
    return {
        "kind": "shadow", "timestamp": iso(ts), "request_id": "r", "primary_version": "v2", "shadow_version": "v3",
        "primary_prediction": labels[0], "primary_probability": 0.5,
        "shadow_prediction": labels[1] if ok else None, "shadow_probability": 0.5 + diff if ok else None,
        "abs_diff": diff if ok else None, "outcome": outcome,
        "primary_latency": latency[0], "shadow_latency": latency[1] if ok else None,
    }  # fmt: skip


class TestShadowReport:
    def test_figures_from_known_records(self, tmp_path):
        """Threshold share, label disagreement, error/timeout/drop rates and latencies from hand-made lines."""
        now = time.time()
        lines = [shadow_line(now - 10, diff=0.2), shadow_line(now - 10, diff=0.05, labels=(1, 0))]
        lines += [shadow_line(now - 10, diff=0.01) for _ in range(2)]
        lines += [shadow_line(now - 10, outcome="error"), shadow_line(now - 10, outcome="timeout")]
        lines += [shadow_line(now - 7200, diff=0.9)]  # outside --since 1h
        lines += [{"kind": "prediction", "timestamp": iso(now), "model_version": "v2"}]
        lines += [{"kind": "shadow_drops", "timestamp": iso(now - 5), "shadow_version": "v3", "dropped": 4}]
        (tmp_path / "predictions-1.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"cut sho')
        report = compute_shadow_report(tmp_path, timedelta(hours=1), threshold=0.1)
        assert len(report.pairs) == 1
        p = report.pairs[0]
        assert (p.records, p.ok, p.errors, p.timeouts) == (6, 4, 1, 1)
        assert p.over_threshold_share == pytest.approx(0.25)
        assert p.label_disagreement == pytest.approx(0.25)
        assert p.max_abs_diff == pytest.approx(0.2)
        assert p.primary_p50_ms == pytest.approx(2.0) and p.shadow_p50_ms == pytest.approx(1.0)
        assert report.dropped == 4 and report.drop_rate == pytest.approx(0.4)

    def test_cli_over_a_real_log(self, workspace, tmp_path, capsys):
        """Served traffic with the shadow on ends up in the log and in the report (table and JSON)."""
        log_dir = tmp_path / "log"
        body = sample(workspace)["request"]
        with serving(create_app(workspace.settings(log_dir=log_dir, log_flush_seconds=0.05))) as c:
            for i in range(25):
                assert c.post("/predict", json={**body, "request_id": f"q-{i}"}).status_code == 200
            shadow = c.app.state.container.rollout.shadow
            wait_for(lambda: shadow.counts["ok"] == 25)
        assert main(["shadow-report", "--log-dir", str(log_dir), "--since", "1h", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["records"] == 25 and out["dropped"] == 0
        pair = out["pairs"][0]
        assert (pair["primary_version"], pair["shadow_version"], pair["ok"]) == ("v2", "v3", 25)
        assert main(["shadow-report", "--log-dir", str(log_dir)]) == 0
        assert "v2" in capsys.readouterr().out

    def test_no_log_is_one_clear_error(self, tmp_path, capsys):
        """Without log files the command fails with one line, no traceback."""
        assert main(["shadow-report", "--log-dir", str(tmp_path / "none")]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
