"""``modelserve evaluate`` over prediction and label log files written in the contract's line formats."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from app.cli import main
from app.jobs.evaluate import evaluate, render_html
from tests.support.quality import (
    T0,
    labels,
    predictions,
    truth,
    write_lines,
    write_model,
    write_multiclass_model,
)


def _logs(tmp_path: Path) -> tuple[Path, Path, dict[str, int], dict[str, float], dict[str, int]]:
    models, logs = tmp_path / "models", tmp_path / "logs"
    logs.mkdir()
    write_model(models, "v1")
    rng = np.random.default_rng(11)
    n = 1500
    x = rng.normal(size=(n, 2))
    p = np.round(truth(x), 4)
    served = (p >= 0.4).astype(np.int64)
    y = (rng.random(n) < p).astype(np.int64)
    ids = [f"r{i}" for i in range(n)]
    times = [T0 + timedelta(minutes=i) for i in range(n)]
    write_lines(logs / "predictions-a.jsonl", predictions(ids, times, "v1", x, p, served))
    labelled = [i for i in range(n) if i % 3]
    # a first, wrong label for some requests, replaced by a later one: the latest must win
    write_lines(
        logs / "labels-a.jsonl",
        labels(
            [ids[i] for i in labelled[:200]],
            [times[i] + timedelta(minutes=5) for i in labelled[:200]],
            1 - y[labelled[:200]],
        ),
    )
    write_lines(
        logs / "labels-b.jsonl",
        labels([ids[i] for i in labelled], [times[i] + timedelta(hours=1) for i in labelled], y[labelled]),
    )
    return (
        models,
        logs,
        {i: int(y[int(i[1:])]) for i in (ids[j] for j in labelled)},
        {ids[i]: float(p[i]) for i in range(n)},
        {ids[i]: int(served[i]) for i in range(n)},
    )


def test_evaluate_metrics_equal_sklearn_on_the_joined_rows(tmp_path: Path) -> None:
    """Counts, coverage, delay and every metric equal what scikit-learn computes on the joined rows."""
    models, logs, truth_by_id, prob, served = _logs(tmp_path)
    report = evaluate(logs, models, timedelta(days=3650), replicates=50)
    [g] = report.groups
    ids = sorted(truth_by_id)
    y = np.array([truth_by_id[i] for i in ids])
    p = np.array([prob[i] for i in ids])
    s = np.array([served[i] for i in ids])
    assert (g.predictions, g.labelled) == (1500, len(ids))
    assert g.coverage == pytest.approx(len(ids) / 1500)
    assert g.delay_p50_s == pytest.approx(3600)
    assert g.metrics["roc_auc"].value == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert g.metrics["log_loss"].value == pytest.approx(skm.log_loss(y, p), abs=1e-12)
    assert g.metrics["brier"].value == pytest.approx(skm.brier_score_loss(y, p), abs=1e-12)
    assert g.metrics["accuracy"].value == pytest.approx(skm.accuracy_score(y, s), abs=1e-12)
    auc = g.metrics["roc_auc"]
    assert auc.low is not None and auc.high is not None and auc.low < auc.value < auc.high
    assert auc.holdout is not None and auc.difference == pytest.approx(auc.value - auc.holdout)
    assert "ece" in g.metrics and g.reliability
    assert "<svg " in render_html(report)


def test_evaluate_cli_groups_by_day_and_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`evaluate --by day --json` gives one group per (version, day) and exits 0."""
    models, logs, *_ = _logs(tmp_path)
    html = tmp_path / "q.html"
    code = main(
        [
            "--models-dir",
            str(models),
            "evaluate",
            "--log-dir",
            str(logs),
            "--since",
            "3650d",
            "--by",
            "day",
            "--json",
            "--html",
            str(html),
            "--bootstrap",
            "20",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert [g["group"] for g in out["groups"]] == ["2026-01-01", "2026-01-02"]
    assert sum(g["predictions"] for g in out["groups"]) == 1500
    assert html.read_text().count("<svg ") == 2


def test_evaluate_without_labels_reports_coverage_zero(tmp_path: Path) -> None:
    """Predictions with no label log yet give counts and zero coverage, not an error."""
    models, logs = tmp_path / "models", tmp_path / "logs"
    logs.mkdir()
    write_model(models, "v1")
    x = np.zeros((3, 2))
    write_lines(logs / "predictions-a.jsonl", predictions(["a", "b", "c"], [T0] * 3, "v1", x, truth(x), [1, 1, 1]))
    [g] = evaluate(logs, models, timedelta(days=3650)).groups
    assert (g.predictions, g.labelled, g.coverage, g.metrics) == (3, 0, 0.0, {})


def test_evaluate_exits_2_on_a_missing_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A log directory that does not exist is a data error: exit 2 and one line naming it."""
    code = main(["--models-dir", str(tmp_path), "evaluate", "--log-dir", str(tmp_path / "nope")])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_evaluate_reads_the_task_from_the_logged_versions_manifest(tmp_path: Path) -> None:
    """A multiclass version's rows are scored as multiclass (accuracy, macro F1 equal sklearn's), labels as classes."""
    models, logs = tmp_path / "models", tmp_path / "logs"
    logs.mkdir()
    write_multiclass_model(models, "m1", [0, 1, 2], accuracy=0.5)
    rng = np.random.default_rng(3)
    served = rng.integers(0, 3, 600)
    truth_ = np.where(rng.random(600) < 0.6, served, rng.integers(0, 3, 600))
    truth_[:5] = 7  # not a class of the model: counted, not scored
    ids = [f"m{i}" for i in range(600)]
    times = [T0 + timedelta(seconds=i) for i in range(600)]
    write_lines(
        logs / "predictions-a.jsonl", predictions(ids, times, "m1", np.zeros((600, 2)), np.full(600, 0.5), served)
    )
    write_lines(logs / "labels-a.jsonl", labels(ids, times, truth_))
    [g] = evaluate(logs, models, timedelta(days=3650), replicates=20).groups
    assert g.task == "multiclass_classification" and g.unknown_labels == 5
    assert set(g.metrics) == {"accuracy", "macro_f1"}
    y, s = truth_[5:], served[5:]
    assert g.metrics["accuracy"].value == pytest.approx(skm.accuracy_score(y, s))
    assert g.metrics["macro_f1"].value == pytest.approx(skm.f1_score(y, s, average="macro"))
    assert g.metrics["accuracy"].difference == pytest.approx(skm.accuracy_score(y, s) - 0.5)
