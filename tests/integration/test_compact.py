"""`modelserve compact` and `labels import` against logs written by the real writers: joins survive compaction."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from app.cli import main
from app.jobs.compact import FAULT_ENV, FAULT_EXIT, compact
from app.jobs.logdata import connect, log_files
from app.jobs.warehouse import WAREHOUSE_DIR
from app.predictor import PredictionRecord
from app.telemetry.label_log import LabelLog
from app.telemetry.metrics import Metrics
from app.telemetry.prediction_log import PredictionLog
from tests.support.workspace import Workspace

JOIN = """
SELECT p.request_id, CAST(p.prediction AS BIGINT) AS prediction, CAST(l.label AS BIGINT) AS label
FROM predictions p LEFT JOIN labels l USING (request_id) ORDER BY p.request_id
"""
N = 300


def write_logs(log_dir: Path) -> None:
    """N predictions and labels for two thirds of them (a tenth relabelled), over several rotated files each."""
    plog = PredictionLog(log_dir, Metrics(), max_bytes=4096, batch_size=20)
    for i in range(N):
        plog.listener(
            PredictionRecord(
                request_id=f"r{i:04d}",
                model_version="v2",
                prediction=i % 2,
                probability=0.5,
                user_id=f"u{i}",
                features={"amount": float(i)},
                request_features={},
                latency=1e-4,
                tier="table",
            )
        )
        if i % 20 == 19:
            plog._drain()  # one batch per file write: the size limit rotates between batches
    plog.close_sync()
    labels = LabelLog(log_dir, Metrics(), max_bytes=2048, batch_size=20)
    for i in range(0, N, 3):
        labels.submit_label(f"r{i:04d}", 1, None, "api")
    for i in range(1, N, 3):
        labels.submit_label(f"r{i:04d}", 0, "2026-01-01T00:00:00Z", "api")
    labels._drain()
    for i in range(0, N, 10):
        labels.submit_label(f"r{i:04d}", 0, None, "api")  # relabelled: the later label wins
        labels._drain()
    labels.close_sync()


def age(log_dir: Path) -> None:
    """Make every JSONL file look long closed (last written two hours ago)."""
    old = time.time() - 7200
    for f in log_dir.glob("*.jsonl"):
        os.utime(f, (old, old))


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    log_dir = tmp_path / "log"
    write_logs(log_dir)
    return log_dir


def test_join_same_after_compaction(logs: Path) -> None:
    """Predictions joined with their latest label are the same read from JSONL, half compacted, and all compacted."""
    before = connect(logs).execute(JOIN).fetchall()
    assert len(before) == N
    assert before[0] == ("r0000", 0, 0) and before[3] == ("r0003", 1, 1) and before[2][2] is None
    assert len(list(logs.glob("predictions-*.jsonl"))) > 2 and len(list(logs.glob("labels-*.jsonl"))) > 2
    summary = compact(logs, max_age_seconds=3600)  # the newest file of each writer counts as open
    assert summary.sources > 0 and len(log_files(logs)) == 2
    assert connect(logs).execute(JOIN).fetchall() == before
    age(logs)
    compact(logs, max_age_seconds=3600)
    assert log_files(logs) == []  # all committed; the files themselves go with the next run
    parts = sorted(p.relative_to(logs / WAREHOUSE_DIR).parts[:3] for p in (logs / WAREHOUSE_DIR).rglob("*.parquet"))
    assert {p[0] for p in parts} == {"kind=prediction", "kind=label"}
    assert all(p[1].startswith("date=") and p[2].startswith("hour=") for p in parts)
    con = connect(logs)
    assert con.execute(JOIN).fetchall() == before
    assert con.execute("SELECT count(*) FROM labels").fetchone() == (210,)  # one per labelled request
    again = compact(logs, max_age_seconds=3600)
    assert again.sources == 0 and again.removed > 0 and list(logs.glob("*.jsonl")) == []
    assert connect(logs).execute(JOIN).fetchall() == before


@pytest.mark.parametrize("fault", ["after_write", "after_commit"])
def test_killed_compact_loses_and_duplicates_nothing(logs: Path, fault: str) -> None:
    """A compact killed between writing Parquet and deleting JSONL, then run again: same rows, none twice."""
    age(logs)
    con = connect(logs)
    before = con.execute(JOIN).fetchall()
    lines = con.execute("SELECT count(*) FROM log").fetchone()
    run = [sys.executable, "-m", "app.cli", "compact", "--log-dir", str(logs)]
    killed = subprocess.run(run, env={**os.environ, FAULT_ENV: fault}, capture_output=True, timeout=120)
    assert killed.returncode == FAULT_EXIT
    mid = connect(logs)  # a reader between the crash and the re-run
    assert mid.execute("SELECT count(*) FROM log").fetchone() == lines
    assert mid.execute(JOIN).fetchall() == before
    for _ in range(2):  # the first run finishes the work, the second deletes what it committed
        done = subprocess.run(run, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert list(logs.glob("*.jsonl")) == []
    after = connect(logs)
    assert after.execute("SELECT count(*) FROM log").fetchone() == lines
    assert after.execute(JOIN).fetchall() == before


def test_query_reads_warehouse_and_jsonl(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`modelserve query` counts the same rows with part of the log compacted."""
    compact(logs, max_age_seconds=3600)
    assert main(["query", "--log-dir", str(logs), "--format", "csv", "SELECT count(*) AS n FROM predictions"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(N)


class TestLabelsImport:
    def run(self, ws: Workspace, log_dir: Path, file: Path, *extra: str) -> int:
        argv = ["--models-dir", str(ws.models_dir), "labels", "import", str(file), "--log-dir", str(log_dir)]
        return main([*argv, "--request-id-column", "rid", "--label-column", "y", *extra])

    def test_csv_imported(self, trained: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Every row of a CSV becomes a label line (source import), later labels replacing earlier ones."""
        file = tmp_path / "labels.csv"
        file.write_text("rid,y,when\nr1,1,2026-01-01T00:00:00Z\nr2,0,\nr1,0,2026-01-02T00:00:00+01:00\n")
        assert self.run(trained, tmp_path / "log", file, "--observed-at-column", "when") == 0
        assert "imported 3 label(s)" in capsys.readouterr().out
        rows = connect(tmp_path / "log").execute(
            "SELECT request_id, CAST(label AS BIGINT), observed_at::VARCHAR FROM labels ORDER BY 1"
        )
        assert rows.fetchall() == [("r1", 0, "2026-01-01 23:00:00+00"), ("r2", 0, None)]
        con = connect(tmp_path / "log")
        assert con.execute("SELECT DISTINCT source FROM log WHERE kind = 'label'").fetchall() == [("import",)]

    def test_parquet_imported(self, trained: Workspace, tmp_path: Path) -> None:
        """A Parquet file's typed columns are imported as they are."""
        file = tmp_path / "labels.parquet"
        pd.DataFrame({"rid": ["a", "b"], "y": [1, 0]}).to_parquet(file)
        assert self.run(trained, tmp_path / "log", file) == 0
        assert connect(tmp_path / "log").execute("SELECT count(*) FROM labels").fetchone() == (2,)

    @pytest.mark.parametrize(
        ("text", "named"),
        [
            ("rid,y\nr1,1\nr2,7\n", "row 2, column 'y'"),
            ("rid,y\nr1,1\n,0\n", "row 2, column 'rid'"),
            ("rid,y\nr1,yes\n", "row 1, column 'y'"),
            ("rid,y\nr1,\n", "row 1, column 'y'"),
            ("rid,y\nr1,0\nr2,\u0661\n", "row 2, column 'y'"),  # ARABIC-INDIC DIGIT ONE is not the class 1
            ("rid,y\nr1,\uff11\n", "row 1, column 'y'"),  # nor is FULLWIDTH DIGIT ONE
        ],
    )
    def test_bad_row_named_nothing_written(
        self, trained: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, named: str
    ) -> None:
        """A row that does not fit the model stops the import (exit 2) naming row and column; nothing is written."""
        file = tmp_path / "labels.csv"
        file.write_text(text)
        assert self.run(trained, tmp_path / "log", file) == 2
        err = capsys.readouterr().err
        assert named in err and len(err.strip().splitlines()) == 1
        assert not list((tmp_path / "log").glob("labels-*")) if (tmp_path / "log").exists() else True

    @pytest.mark.parametrize("suffix", ["csv", "parquet"])
    def test_column_named_twice_refused(
        self, trained: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
    ) -> None:
        """A label column present twice is refused naming it (exit 2): the CSV's first was imported silently,
        the Parquet file failed with ArrowInvalid 'Multiple matches for FieldRef'."""
        table = pa.table([pa.array(["r1"]), pa.array([1]), pa.array([0])], names=["rid", "y", "y"])
        file = tmp_path / f"labels.{suffix}"
        if suffix == "csv":
            pacsv.write_csv(table, file)
        else:
            pq.write_table(table, file)
        assert self.run(trained, tmp_path / "log", file) == 2
        err = capsys.readouterr().err
        assert "column 'y' is named more than once" in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "log").exists() or not list((tmp_path / "log").glob("labels-*"))

    def test_missing_column_named(self, trained: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A column that is not in the file is named (exit 2)."""
        file = tmp_path / "labels.csv"
        file.write_text("request,y\nr1,1\n")
        assert self.run(trained, tmp_path / "log", file) == 2
        assert "'rid'" in capsys.readouterr().err
