"""``modelserve query`` and ``modelserve drift`` over a prediction log written by the real writer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

from app.cli import main
from app.jobs import psi
from app.model.pool import ModelPool
from app.model.repository import Repository
from app.predictor import PredictionRecord
from app.telemetry.metrics import Metrics
from app.telemetry.prediction_log import PredictionLog
from app.training.data import generate_requests
from tests.support.workspace import Workspace


def write_log(
    ws: Workspace,
    log_dir: Path,
    n: int,
    seed: int,
    shift: dict[str, float] | None = None,
    sample_rate: float = 1.0,
) -> None:
    """Predict ``n`` generated requests with the production model and log them like the server does."""
    repository = Repository(ws.models_dir)
    model = ModelPool(repository, warmup_iterations=0).load(repository.resolve("production"))
    users = pd.read_parquet(ws.feature_table)
    store = users.set_index("user_id").to_dict("index")
    bodies = generate_requests(n, seed=seed, users_df=users, shift=shift)
    rows = [{**store[b["user_id"]], **b["features"]} for b in bodies]
    labels, probs = model.runtime.predict(rows)
    plog = PredictionLog(log_dir, Metrics(), sample_rate=sample_rate)
    for i, (b, row) in enumerate(zip(bodies, rows, strict=True)):
        rec = PredictionRecord(
            request_id=f"r{seed}-{i}",
            model_version=model.version,
            prediction=int(labels[i]),
            probability=float(probs[i]),
            user_id=b["user_id"],
            features=row,
            request_features=b["features"],
            latency=1e-4,
            tier="table",
        )
        plog.listener(rec, model)
    plog.submit({"kind": "shadow", "request_id": f"r{seed}-0", "primary_version": model.version, "abs_diff": 0.02})
    plog.close_sync()


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def plain_log(trained: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    log_dir = tmp_path_factory.mktemp("log")
    write_log(trained, log_dir, 3000, seed=11)
    return log_dir


class TestQuery:
    def test_sql_over_predictions_in_every_format(self, plain_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A real aggregate over the last 24 h comes out as a table, CSV and JSON with the same numbers."""
        sql = (
            "SELECT model_version, count(*) AS n, round(avg(probability), 6) AS mean_p, "
            "count(*) FILTER (WHERE features->>'device' = 'ios') AS ios "
            "FROM predictions WHERE timestamp > now() - INTERVAL 24 HOUR GROUP BY 1"
        )
        code, out, _ = run(["query", sql, "--log-dir", str(plain_log), "--format", "json"], capsys)
        assert code == 0
        [row] = json.loads(out)
        assert row["model_version"] == "v2" and row["n"] == 3000 and 0 < row["mean_p"] < 1 and 0 < row["ios"] < 3000
        code, out, _ = run(["query", sql, "--log-dir", str(plain_log), "--format", "csv"], capsys)
        assert out.splitlines() == ["model_version,n,mean_p,ios", f"v2,3000,{row['mean_p']:.6g},{row['ios']}"]
        code, out, _ = run(["query", sql, "--log-dir", str(plain_log)], capsys)
        lines = out.splitlines()
        assert lines[0].split() == ["model_version", "n", "mean_p", "ios"]
        assert lines[2].split()[:2] == ["v2", "3000"] and lines[-1] == "(1 row)"

    def test_shadow_view(self, plain_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Shadow records are in their own view, not among the predictions."""
        code, out, _ = run(
            ["query", "SELECT count(*) AS n FROM shadow", "--log-dir", str(plain_log), "--format", "csv"], capsys
        )
        assert (code, out.split()) == (0, ["n", "1"])

    def test_empty_log_dir_is_one_line_error(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An empty or missing log directory is a clear one-line error and a non-zero exit."""
        for d in (tmp_path, tmp_path / "missing"):
            code, out, err = run(["query", "SELECT 1", "--log-dir", str(d)], capsys)
            assert code != 0 and out == "" and len(err.strip().splitlines()) == 1 and "prediction log" in err

    def test_bad_sql_is_one_line_error(self, plain_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A SQL error is reported on one line, without a traceback."""
        code, _, err = run(["query", "SELEC nope", "--log-dir", str(plain_log)], capsys)
        assert code == 1 and err.startswith("error: query failed") and len(err.strip().splitlines()) == 1

    def test_string_class_predictions_compare_as_json_text(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A string-class prediction is JSON: ``prediction = 'yes'`` fails with a hint naming ``prediction->>'$'``
        (it was only DuckDB's 'Malformed JSON ... Input: "yes"'), and the hinted query counts the rows."""
        rows = [
            {"kind": "prediction", "timestamp": "2026-01-01T00:00:00Z", "request_id": f"r{i}", "model_version": "v1",
             "prediction": label, "probability": 0.9, "features": {"x": 1.0}}
            for i, label in enumerate(["yes", "no", "yes"])
        ]  # fmt: skip
        (tmp_path / "predictions-a.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        code, _, err = run(["query", "SELECT count(*) FROM predictions WHERE prediction = 'yes'", "--log-dir",
                            str(tmp_path)], capsys)  # fmt: skip
        assert code == 1 and "prediction->>'$' = 'yes'" in err and len(err.strip().splitlines()) == 1
        sql = "SELECT count(*) AS n FROM predictions WHERE prediction->>'$' = 'yes'"
        code, out, _ = run(["query", sql, "--log-dir", str(tmp_path), "--format", "csv"], capsys)
        assert (code, out.split()) == (0, ["n", "2"])


class TestDrift:
    def test_unshifted_traffic_is_not_flagged(
        self, trained: Workspace, plain_log: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Traffic drawn like the training data is below the warn threshold everywhere and exits 0."""
        args = ["--models-dir", str(trained.models_dir), "drift", "--log-dir", str(plain_log), "--json"]
        code, out, _ = run(args, capsys)
        report = json.loads(out)
        assert code == 0 and report["status"] == "ok", out
        assert report["records"] == 3000
        assert report["sample_rate"] == 1.0 and report["sample_rates"] == [1.0]
        assert {f["name"] for f in report["features"]} >= {"amount", "country", "score", "(prediction)"}

    @pytest.mark.parametrize("feature,factor", [("amount", 3.0), ("score", 0.4)])
    def test_shifted_feature_is_flagged(
        self, trained: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str], feature: str, factor: float
    ) -> None:
        """Shifting one request feature alerts on exactly that feature, exits 3 and writes the HTML report."""
        write_log(trained, tmp_path / "log", 3000, seed=12, shift={feature: factor})
        html = tmp_path / "drift.html"
        args = ["--models-dir", str(trained.models_dir), "drift", "--log-dir", str(tmp_path / "log"), "--json"]
        code, out, _ = run([*args, "--html", str(html)], capsys)
        report = json.loads(out)
        by_name = {f["name"]: f for f in report["features"]}
        assert code == 3 and by_name[feature]["status"] == "alert"
        others = [n for n, f in by_name.items() if n not in (feature, "(prediction)")]
        assert all(by_name[n]["status"] == "ok" for n in others), by_name
        page = html.read_text()
        assert page.count("<svg ") == len(by_name) and feature in page

    def test_the_sample_rate_is_reported(
        self, trained: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A log written at rate 0.5 holds about half the records and drift names the rate in JSON, table and HTML."""
        log_dir = tmp_path / "log"
        write_log(trained, log_dir, 3000, seed=13, sample_rate=0.5)
        base = ["--models-dir", str(trained.models_dir), "drift", "--log-dir", str(log_dir)]
        code, out, _ = run([*base, "--json"], capsys)
        report = json.loads(out)
        assert code == 0 and report["sample_rate"] == 0.5 and report["sample_rates"] == [0.5]
        assert abs(report["records"] - 1500) < 150
        html = tmp_path / "drift.html"
        code, out, _ = run([*base, "--html", str(html)], capsys)
        assert "log sample rate 0.5" in out.splitlines()[0]
        assert "log sample rate 0.5" in html.read_text()

    def test_table_output_and_version_filter(
        self, trained: Workspace, plain_log: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The default output is a table; a version with no traffic is a one-line error."""
        base = ["--models-dir", str(trained.models_dir), "drift", "--log-dir", str(plain_log)]
        code, out, _ = run(base, capsys)
        assert code == 0 and "FEATURE" in out and "overall: ok" in out
        code, out, err = run([*base, "--version", "v1"], capsys)
        assert code == 1 and "no predictions by v1" in err
        code, _, err = run([*base, "--since", "yesterday"], capsys)
        assert code == 1 and "--since" in err


class TestPsi:
    def test_identical_distributions_score_zero(self) -> None:
        """PSI of a distribution with itself is 0, empty buckets included (smoothing on both sides)."""
        assert psi.psi([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 0.0

    def test_empty_bucket_is_finite(self) -> None:
        """A bucket empty on one side contributes a finite amount thanks to epsilon smoothing."""
        value = psi.psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2])
        assert 0.25 < value < 10

    def test_buckets_sum_to_one_with_nulls_and_other(self) -> None:
        """Observed buckets cover nulls and unknown categories, so each side sums to 1."""
        spec: dict[str, Any] = {"kind": "categorical", "categories": ["a", "b"], "freqs": [0.5, 0.5]}
        observed = psi.observed_buckets(["a", "c", None, "b"], spec)
        assert observed == pytest.approx([1 / 4, 1 / 4, 1 / 4, 1 / 4])
        assert psi.status(0.05) == "ok" and psi.status(0.1) == "warn" and psi.status(0.25) == "alert"
