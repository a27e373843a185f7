"""The monitor on simulated traffic with known truth: inputs shift at a known window, labels arrive late.

The synthetic model predicts the true probability, so it stays calibrated
when its inputs move; shrinking the inputs towards 0 makes it less sure and
its realized ROC AUC drop by about 0.15.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from app.jobs.monitor import monitor
from tests.support.quality import (
    T0,
    labels,
    predictions,
    simulate_traffic,
    write_lines,
    write_model,
    write_multiclass_model,
)

DAY = timedelta(days=1)


def _setup(tmp_path: Path, seed: int, windows: int, rows: int, shift_at: int | None, **kw: object) -> tuple[Path, Path]:
    models, logs = tmp_path / f"models-{seed}", tmp_path / f"logs-{seed}"
    logs.mkdir()
    write_model(models, "v1")
    (models / "production").symlink_to("v1")
    simulate_traffic(logs, "v1", seed, windows, rows, DAY, shift_at=shift_at, **kw)  # type: ignore[arg-type]
    return models, logs


def test_monitor_says_retrain_within_bounded_windows_after_the_drop(tmp_path: Path) -> None:
    """Run at the end of each day: ok before the shift, retrain at most sustain + 1 windows after it."""
    shift = 6
    models, logs = _setup(tmp_path, 1, 12, 1500, shift)
    decisions = {}
    for day in range(3, 13):
        report = monitor(logs, models, window=DAY, windows=5, replicates=100, now=T0 + DAY * day)
        decisions[day] = report.decision
    assert all(decisions[d] == "ok" for d in range(3, shift + 1))
    first_retrain = min(d for d, v in decisions.items() if v == "retrain")
    assert shift < first_retrain <= shift + 3 + 1
    assert all(decisions[d] == "retrain" for d in range(first_retrain, 13))
    drop = report.windows[-1]
    assert drop.realized["roc_auc"].value < report.reference - 0.1  # type: ignore[operator]


def test_no_shift_runs_rarely_say_retrain(tmp_path: Path) -> None:
    """Over 20 seeded runs without a shift, `retrain` comes at most once (false-alarm rate <= 5%)."""
    retrains = 0
    for seed in range(20):
        models, logs = _setup(tmp_path, 100 + seed, 4, 800, None)
        report = monitor(logs, models, window=DAY, windows=4, replicates=100, now=T0 + DAY * 4)
        retrains += report.decision == "retrain"
    assert retrains <= 1


def test_cbpe_tracks_realized_roc_auc_while_calibration_holds(tmp_path: Path) -> None:
    """Before and after the input shift, the label-free ROC AUC is within 0.03 of the realized one per window."""
    models, logs = _setup(tmp_path, 7, 8, 3000, 4, label_share=1.0, label_delay=timedelta(minutes=1))
    report = monitor(logs, models, window=DAY, windows=8, replicates=0, now=T0 + DAY * 8 + timedelta(hours=1))
    gaps = [abs(w.estimated["roc_auc"].value - w.realized["roc_auc"].value) for w in report.windows if w.predictions]
    assert len(gaps) == 8 and max(gaps) <= 0.03


def test_monitor_cli_exits_3_on_retrain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`modelserve monitor` exits 3 when the decision is retrain and names the reasons."""
    start = datetime.now(UTC).replace(microsecond=0) - DAY * 6
    models, logs = _setup(tmp_path, 3, 6, 1000, 2, label_delay=timedelta(minutes=1), start=start)
    code = main(
        [
            "--models-dir",
            str(models),
            "monitor",
            "--log-dir",
            str(logs),
            "--window",
            "1d",
            "--windows",
            "6",
            "--bootstrap",
            "50",
        ]
    )
    out = capsys.readouterr().out
    assert code == 3 and "RETRAIN" in out and "worse than the holdout" in out


def test_multiclass_estimate_and_log_loss_read_the_logged_probabilities(tmp_path: Path) -> None:
    """A multiclass version's window has its label-free accuracy (the mean probability of the served label)
    and a realized log loss from the logged probabilities (the monitor never found them: no estimate)."""
    models, logs = tmp_path / "models", tmp_path / "logs"
    logs.mkdir()
    write_multiclass_model(models, "m1", [1, 2, 3], accuracy=0.7)
    (models / "production").symlink_to("m1")
    rng = np.random.default_rng(5)
    n = 300
    probs = rng.dirichlet([2.0, 2.0, 2.0], n)
    served = probs.argmax(axis=1) + 1
    ids = [f"m{i}" for i in range(n)]
    times = [T0 + timedelta(seconds=i) for i in range(n)]
    records = predictions(ids, times, "m1", np.zeros((n, 2)), probs.max(axis=1), served)
    for r, p in zip(records, probs, strict=True):
        r["probabilities"] = {str(c): float(v) for c, v in zip((1, 2, 3), p, strict=True)}
    write_lines(logs / "predictions-a.jsonl", records)
    write_lines(logs / "labels-a.jsonl", labels(ids, times, served))
    report = monitor(logs, models, window=DAY, windows=1, replicates=0, now=T0 + timedelta(hours=1))
    [w] = report.windows
    assert w.predictions == n and w.estimated["accuracy"].value == pytest.approx(probs.max(axis=1).mean())
    assert "log_loss" in w.realized and w.realized["accuracy"].value == 1.0
