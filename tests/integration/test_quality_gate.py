"""``modelserve gate`` and ``promote --gate`` on shadow, prediction and label logs with a known better model."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from app.jobs.gate import run_gate
from app.jobs.gate_limits import GateLimits
from app.jobs.shadow_quality import compare_labelled
from app.model.repository import Repository
from tests.support.quality import T0, WEIGHTS, labels, predictions, shadow, truth, write_lines, write_model

NOW = T0 + timedelta(days=1)


def _scenario(
    tmp_path: Path, candidate_better: bool = True, error_share: float = 0.0, n: int = 3000
) -> tuple[Path, Path]:
    """v1 serves production, v2 shadows it; one of them sees a noisy copy of the inputs."""
    models, logs = tmp_path / "models", tmp_path / "logs"
    logs.mkdir()
    for v in ("v1", "v2"):
        write_model(models, v)
    os.symlink("v1", models / "production")
    rng = np.random.default_rng(21)
    x = rng.normal(size=(n, 2))
    y = (rng.random(n) < truth(x)).astype(np.int64)
    good = truth(x)
    noisy = 1 / (1 + np.exp(-(x @ WEIGHTS + rng.normal(scale=1.5, size=n))))
    p_primary, p_candidate = (noisy, good) if candidate_better else (good, noisy)
    ids = [f"q{i}" for i in range(n)]
    times = [T0 + timedelta(seconds=20 * i) for i in range(n)]
    outcome = ["error" if r < error_share else "ok" for r in rng.random(n)]
    write_lines(logs / "predictions-a.jsonl", predictions(ids, times, "v1", x, p_primary, p_primary >= 0.5))
    write_lines(logs / "predictions-a.jsonl", shadow(ids, times, "v1", "v2", p_primary, p_candidate, outcome, 0.0012))
    half = slice(0, n, 2)
    write_lines(logs / "labels-a.jsonl", labels(ids[half], [t + timedelta(minutes=1) for t in times[half]], y[half]))
    return models, logs


def _failed(models: Path, logs: Path, **limits: float) -> set[str]:
    decision = run_gate(
        logs,
        models,
        "v2",
        since=timedelta(days=2),
        limits=GateLimits(**limits),  # type: ignore[arg-type]
        replicates=100,
        now=NOW,
    )
    return {c.name for c in decision.criteria if not c.passed}


def test_a_better_candidate_passes(tmp_path: Path) -> None:
    """A candidate with more signal on the same requests passes every criterion."""
    assert _failed(*_scenario(tmp_path)) == set()


def test_a_worse_candidate_fails_on_quality_only(tmp_path: Path) -> None:
    """A candidate that loses ROC AUC against the primary fails the non-inferiority criterion and nothing else."""
    assert _failed(*_scenario(tmp_path, candidate_better=False)) == {"quality"}


def test_a_raising_candidate_fails_on_errors(tmp_path: Path) -> None:
    """A candidate whose shadow runs fail 5% of the time fails on the shadow error rate."""
    assert "shadow_errors" in _failed(*_scenario(tmp_path, error_share=0.05))


def test_too_little_data_fails_on_minimums(tmp_path: Path) -> None:
    """Too few shadowed and labelled requests fail the minimums even for a better candidate."""
    assert _failed(*_scenario(tmp_path, n=300)) >= {"shadowed", "labelled"}


def test_labelled_shadow_comparison_is_paired(tmp_path: Path) -> None:
    """shadow-report --labels scores both models on the same labelled requests, with the agreement rate."""
    models, logs = _scenario(tmp_path)
    [pair] = compare_labelled(logs, models, timedelta(days=2), replicates=100, now=NOW)
    assert pair.labelled == 1500 and pair.agreement is not None and 0.5 < pair.agreement < 1
    d = pair.difference["roc_auc"]
    assert d.value == pytest.approx(pair.candidate["roc_auc"].value - pair.primary["roc_auc"].value)
    assert d.low is not None and d.low > 0


def test_promote_with_gate_refuses_on_fail_and_records_the_decision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`promote --gate` exits 3 on a failing gate, leaves the alias, and the history holds the decision's figures."""
    models, logs = _scenario(tmp_path, candidate_better=False)
    code = main(
        [
            "--models-dir",
            str(models),
            "promote",
            "v2",
            "--gate",
            "--log-dir",
            str(logs),
            "--since",
            "3650d",
            "--bootstrap",
            "50",
        ]
    )
    assert code == 3
    assert os.readlink(models / "production") == "v1"
    [entry] = Repository(models).history()
    assert entry["action"] == "gate" and entry["decision"] == "fail" and entry["version"] == "v2"
    assert {c["name"] for c in entry["criteria"] if not c["passed"]} == {"quality"}
    capsys.readouterr()
    code = main(
        [
            "--models-dir",
            str(models),
            "gate",
            "v2",
            "--json",
            "--log-dir",
            str(logs),
            "--since",
            "3650d",
            "--bootstrap",
            "50",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 3 and out["decision"] == "fail" and len(Repository(models).history()) == 2


def test_shadow_report_labels_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`shadow-report --labels --json` adds the labelled comparison of each pair to the report."""
    models, logs = _scenario(tmp_path)
    code = main(
        [
            "--models-dir",
            str(models),
            "shadow-report",
            "--labels",
            "--json",
            "--log-dir",
            str(logs),
            "--since",
            "3650d",
            "--bootstrap",
            "50",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["records"] == 3000
    [pair] = out["labelled"]
    assert pair["labelled"] == 1500 and pair["metrics"]["roc_auc"]["difference"]["value"] > 0


def test_regression_margin_is_relative_to_the_primary_rmse(tmp_path: Path) -> None:
    """For a regression in large units (prices), a candidate 0.5% worse in RMSE passes the default 1% margin and
    one 16% worse fails it (the margin was 0.01 of a unit: a candidate had to be strictly better)."""
    models, logs = tmp_path / "models", tmp_path / "logs"
    logs.mkdir()
    for v in ("r1", "r2"):
        write_model(models, v)
        path = models / v / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["task"] = "regression"
        manifest["outputs"] = {"prediction": "variable", "classes": None, "positive_class": None}
        manifest["metrics"] = {"rmse": 10_000.0}
        manifest["reference"]["prediction"] = manifest["reference"]["features"]["x1"]
        path.write_text(json.dumps(manifest))
    os.symlink("r1", models / "production")
    rng = np.random.default_rng(4)
    n = 2000
    x = rng.normal(size=(n, 2))
    y = 300_000 + 50_000 * x[:, 0]
    ids = [f"r{i}" for i in range(n)]
    times = [T0 + timedelta(seconds=20 * i) for i in range(n)]

    primary = y + rng.normal(scale=10_000, size=n)

    def scenario(candidate_noise: float) -> set[str]:
        for f in logs.iterdir():
            f.unlink()
        candidate = primary + rng.normal(scale=candidate_noise, size=n)
        records = predictions(ids, times, "r1", x, np.zeros(n), np.zeros(n))
        for r, p in zip(records, primary, strict=True):
            r["prediction"], r["probability"] = float(p), None
        lines = shadow(ids, times, "r1", "r2", np.zeros(n), np.zeros(n), ["ok"] * n, 0.0012)
        for r, p, c in zip(lines, primary, candidate, strict=True):
            r.update(primary_prediction=float(p), shadow_prediction=float(c), abs_diff=abs(float(p - c)))
            r.update(primary_probability=None, shadow_probability=None, task="regression")
        write_lines(logs / "predictions-a.jsonl", records + lines)
        write_lines(logs / "labels-a.jsonl", labels(ids, [t + timedelta(minutes=1) for t in times], y))
        decision = run_gate(logs, models, "r2", since=timedelta(days=2), limits=GateLimits(), replicates=100, now=NOW)
        return {c.name for c in decision.criteria if not c.passed}

    assert "quality" not in scenario(1_000)
    assert "quality" in scenario(6_000)
