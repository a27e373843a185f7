"""``modelserve batch`` end to end: counts, parity with /predict, the sink, and resuming."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from app.cli import main
from app.errors import ModelServeError
from app.jobs.batch import BatchOptions, run_batch
from app.main import create_app
from app.training.data import generate_requests
from tests.support.workspace import Workspace, serving


def flat_rows(ws: Workspace, n: int, seed: int) -> list[dict[str, Any]]:
    users = pd.read_parquet(ws.feature_table)
    return [
        {"user_id": b["user_id"], **b["features"], "request_id": f"r-{i}"}
        for i, b in enumerate(generate_requests(n, seed=seed, users_df=users))
    ]


def with_bad_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [dict(r) for r in rows]
    rows[3]["amount"] = float("inf")  # finite_number
    rows[10]["user_id"] = "u-unknown"  # unknown user (the feature server)
    rows[17]["device"] = None  # null where not nullable
    rows[25]["user_id"] = ""  # too short
    return rows


def write_parquet(rows: list[dict[str, Any]], path: Path) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_csv_cells(rows: list[dict[str, Any]], src: Path, column: str, cells: dict[int, str]) -> None:
    """``rows`` as a CSV file with the ``column`` cell of row i (from 0) written as ``cells[i]``."""
    pd.DataFrame(rows).to_csv(src, index=False)
    text = src.read_text().splitlines()
    at = text[0].split(",").index(column)
    for row, value in cells.items():
        parts = text[row + 1].split(",")
        parts[at] = value
        text[row + 1] = ",".join(parts)
    src.write_text("\n".join(text) + "\n")


def rejects(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


class TestCounts:
    @pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
    def test_rows_in_equal_rows_out_plus_rejects(self, trained: Workspace, tmp_path: Path, fmt: str) -> None:
        """Every input row is either in the output or in the rejects file with its reasons."""
        rows = with_bad_rows(flat_rows(trained, 500, seed=21))
        src = tmp_path / f"in.{fmt}"
        if fmt == "parquet":
            write_parquet(rows, src)
        elif fmt == "csv":
            pd.DataFrame(rows).to_csv(src, index=False)
        else:
            src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        out = tmp_path / "out.parquet"
        summary = run_batch(trained.settings(), BatchOptions(src, out, chunk_rows=128, progress=False))
        table = pq.read_table(out)
        bad = rejects(tmp_path / "out.parquet.rejects.jsonl")
        assert summary.rows_in == 500 == table.num_rows + len(bad)
        assert sorted(r["row"] for r in bad) == [3, 10, 17, 25]
        assert all(r["errors"] and r["errors"][0]["msg"] for r in bad)
        assert table.column("request_id").to_pylist() == [
            r["request_id"] for i, r in enumerate(rows) if i not in {3, 10, 17, 25}
        ]
        assert set(table.column_names) >= {"user_id", "amount", "prediction", "probability", "model_version"}
        assert not (tmp_path / "out.parquet.parts").exists()

    def test_cli_writes_csv_and_prints_a_summary(
        self, trained: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The command writes CSV output, prints a summary, and refuses unknown columns on one line."""
        monkeypatch.setenv("MODELSERVE_FEATURE_TABLE", str(trained.feature_table))
        src = write_parquet(flat_rows(trained, 50, seed=2), tmp_path / "in.parquet")
        args = ["--models-dir", str(trained.models_dir), "batch", str(src), str(tmp_path / "o.csv"), "--no-progress"]
        assert main(args) == 0
        assert "50 written" in capsys.readouterr().err
        assert len(pd.read_csv(tmp_path / "o.csv")) == 50
        bad = write_parquet([{**r, "extra": 1} for r in flat_rows(trained, 5, seed=2)], tmp_path / "bad.parquet")
        assert main([*args[:3], str(bad), str(tmp_path / "o2.csv"), "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: input unknown columns ['extra']") and len(err.strip().splitlines()) == 1


class TestParity:
    def test_same_rows_give_identical_probabilities_via_predict_and_batch(
        self, trained: Workspace, tmp_path: Path
    ) -> None:
        """Each row's probability from batch equals the one /predict answers, bit for bit."""
        rows = flat_rows(trained, 300, seed=33)
        out = tmp_path / "out.parquet"
        run_batch(trained.settings(), BatchOptions(write_parquet(rows, tmp_path / "in.parquet"), out, progress=False))
        batch = pq.read_table(out).to_pylist()
        with serving(create_app(trained.settings())) as client:
            for row, got in zip(rows, batch, strict=True):
                features = {k: row[k] for k in ("amount", "device", "score", "first_purchase")}
                answer = client.post("/predict", json={"user_id": row["user_id"], "features": features}).json()
                assert answer["probability"] == got["probability"]
                assert answer["prediction"] == got["prediction"]
                assert answer["model_version"] == got["model_version"]


class FlakySink:
    """A sink that fails some POSTs (503, with and without Retry-After) and remembers idempotency keys."""

    def __init__(self, fail_every: int = 3, refuse_chunk: int | None = None) -> None:
        self.fail_every = fail_every
        self.refuse_chunk = refuse_chunk
        self.attempts: dict[str, int] = {}
        self.stored: dict[str, list[dict[str, Any]]] = {}
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        key = request.headers["Idempotency-Key"]
        body = orjson.loads(request.get_data())
        with self.lock:
            n = self.attempts[key] = self.attempts.get(key, 0) + 1
            if self.refuse_chunk is not None and body["chunk"] == self.refuse_chunk:
                return Response("no", status=400)
            if n == 1 and hash(key) % self.fail_every == 0:
                return Response("busy", status=503, headers={"Retry-After": "0"})
            if n == 1 and hash(key) % self.fail_every == 1:
                return Response("oops", status=502)
            self.stored.setdefault(key, body["rows"])
        return Response("{}", status=200, content_type="application/json")


class TestSink:
    def test_flaky_sink_loses_nothing(self, trained: Workspace, tmp_path: Path, httpserver: HTTPServer) -> None:
        """With a third of first attempts failing, every output row reaches the sink exactly once per key."""
        sink = FlakySink()
        httpserver.expect_request("/sink", method="POST").respond_with_handler(sink)
        rows = with_bad_rows(flat_rows(trained, 1000, seed=44))
        options = BatchOptions(
            write_parquet(rows, tmp_path / "in.parquet"),
            tmp_path / "out.parquet",
            chunk_rows=256,
            sink=httpserver.url_for("/sink"),
            sink_batch=50,
            sink_concurrency=8,
            progress=False,
        )
        summary = run_batch(trained.settings(), options)
        posted = sorted(r["row"] for batch in sink.stored.values() for r in batch)
        assert posted == sorted(set(range(1000)) - {3, 10, 17, 25})
        assert summary.post_retries > 0 and any(n > 1 for n in sink.attempts.values())
        table = pq.read_table(tmp_path / "out.parquet")
        by_row = {r["row"]: r for batch in sink.stored.values() for r in batch}
        assert [by_row[i]["probability"] for i in posted] == table.column("probability").to_pylist()


class TestResume:
    def test_rerun_after_interruption_does_not_duplicate(
        self, trained: Workspace, tmp_path: Path, httpserver: HTTPServer
    ) -> None:
        """A run stopped at chunk 2 (the sink refuses it) leaves a checkpoint; the rerun posts and
        writes only the remaining chunks, and the output has every row exactly once."""
        first = FlakySink(fail_every=10**9, refuse_chunk=2)
        httpserver.expect_request("/sink", method="POST").respond_with_handler(first)
        rows = flat_rows(trained, 1000, seed=55)
        src = write_parquet(rows, tmp_path / "in.parquet")
        out = tmp_path / "out.parquet"

        def options() -> BatchOptions:
            return BatchOptions(
                src, out, chunk_rows=200, sink=httpserver.url_for("/sink"), sink_batch=100, progress=False
            )

        with pytest.raises(ModelServeError, match="refused"):
            run_batch(trained.settings(), options())
        assert not out.exists()
        checkpoint = orjson.loads((tmp_path / "out.parquet.parts" / "checkpoint.json").read_bytes())
        assert set(checkpoint["done"]) >= {"0", "1"} and "2" not in checkpoint["done"]
        done_before = {int(k) for k in checkpoint["done"]}
        keys_before = set(first.stored)

        httpserver.clear()
        second = FlakySink(fail_every=10**9)
        httpserver.expect_request("/sink", method="POST").respond_with_handler(second)
        summary = run_batch(trained.settings(), options())
        assert summary.chunks_skipped == len(done_before)
        assert not (set(second.attempts) & keys_before)  # nothing posted twice
        assert {int(k.split("-")[1]) for k in second.stored} == set(range(5)) - done_before
        posted = sorted(r["row"] for s in (first, second) for batch in s.stored.values() for r in batch)
        assert posted == list(range(1000))
        table = pq.read_table(out)
        assert table.column("request_id").to_pylist() == [r["request_id"] for r in rows]


class TestIntRange:
    def test_ints_beyond_64_bits_are_rejected_rows(self, task_models: Any, tmp_path: Path) -> None:
        """A CSV int cell beyond 64 bits is that row's reject, as /predict refuses it, not the whole run's error."""
        models = task_models.workspace(tmp_path, "m1")
        rows = [dict(b["features"], request_id=b["request_id"]) for b in task_models.bodies(8)]
        src = tmp_path / "in.csv"
        huge = {2: "1" + "0" * 400, 4: str(2**63), 6: str(-(2**63) - 1)}
        write_csv_cells(rows, src, "age", huge)
        out = tmp_path / "out.parquet"
        summary = run_batch(task_models.settings(models), BatchOptions(src, out, progress=False))
        bad = rejects(tmp_path / "out.parquet.rejects.jsonl")
        assert summary.rows_in == 8 == pq.read_table(out).num_rows + len(bad)
        assert sorted(r["row"] for r in bad) == sorted(huge)
        assert all([e["loc"] for e in r["errors"]] == [["features", "age"]] for r in bad)

    def test_uint64_parquet_beyond_int64_is_rejected(self, task_models: Any, tmp_path: Path) -> None:
        """A Parquet uint64 value past int64's range is refused as /predict refuses it; the rest is scored."""
        models = task_models.workspace(tmp_path, "m1")
        rows = [dict(b["features"], request_id=b["request_id"]) for b in task_models.bodies(4)]
        table = pa.Table.from_pylist(rows)
        ages = [2**64 - 1 if i == 1 else r["age"] for i, r in enumerate(rows)]
        table = table.set_column(table.column_names.index("age"), "age", pa.array(ages, pa.uint64()))
        src = tmp_path / "in.parquet"
        pq.write_table(table, src)
        out = tmp_path / "out.parquet"
        summary = run_batch(task_models.settings(models), BatchOptions(src, out, progress=False))
        bad = rejects(tmp_path / "out.parquet.rejects.jsonl")
        assert summary.rows_in == 4 and pq.read_table(out).num_rows == 3
        assert [r["row"] for r in bad] == [1]
        assert bad[0]["errors"] == [
            {
                "loc": ["features", "age"],
                "msg": f"Input should be less than or equal to {2**63 - 1}",
                "type": "less_than_equal",
            }
        ]


class TestJsonlFraming:
    def test_byte_order_mark_and_blank_lines_are_not_rows(self, task_models: Any, tmp_path: Path) -> None:
        """A JSONL file saved with a UTF-8 byte order mark, blank lines between rows and at its end: every
        object is scored (the first one was rejected as invalid JSON) and no blank line is counted as a row."""
        models = task_models.workspace(tmp_path, "m1")
        rows = [dict(b["features"], request_id=b["request_id"]) for b in task_models.bodies(4)]
        lines = [orjson.dumps(r) for r in rows]
        src = tmp_path / "in.jsonl"
        body = b"\xef\xbb\xbf" + lines[0] + b"\n\n" + lines[1] + b"\r\n   \n" + b"\n".join(lines[2:]) + b"\n\n"
        src.write_bytes(body)
        out = tmp_path / "out.parquet"
        summary = run_batch(task_models.settings(models), BatchOptions(src, out, chunk_rows=2, progress=False))
        assert summary.rows_in == 4 and summary.rejected == 0
        assert pq.read_table(out).column("request_id").to_pylist() == [r["request_id"] for r in rows]

    def test_user_ids_are_kept_for_a_model_without_store_features(self, task_models: Any, tmp_path: Path) -> None:
        """A JSONL row's user_id reaches the output as a CSV or Parquet row's does (JSONL dropped it when the
        model had no store features, so results could not be joined back to their users)."""
        models = task_models.workspace(tmp_path, "m1")
        rows = [dict(b["features"], user_id=f"u-{i}") for i, b in enumerate(task_models.bodies(4))]
        src = tmp_path / "in.jsonl"
        src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        out = tmp_path / "out.parquet"
        summary = run_batch(task_models.settings(models), BatchOptions(src, out, progress=False))
        assert summary.rows_in == 4 and summary.rejected == 0
        assert pq.read_table(out).column("user_id").to_pylist() == ["u-0", "u-1", "u-2", "u-3"]


class TestCsvEncoding:
    def test_cells_not_utf8_are_rejected_rows(self, task_models: Any, tmp_path: Path) -> None:
        """A CSV cell that is not UTF-8 is its row's reject naming the column; the other rows are scored (the
        whole run stopped with 'ArrowInvalid: CSV conversion error to string', naming no row)."""
        models = task_models.workspace(tmp_path, "m1")
        rows = [dict(b["features"], request_id=b["request_id"]) for b in task_models.bodies(6)]
        src = tmp_path / "in.csv"
        pd.DataFrame(rows).to_csv(src, index=False)
        lines = src.read_bytes().splitlines()
        lines[2] = lines[2].replace(rows[1]["request_id"].encode(), b"r\xff1")  # Latin-1, not UTF-8
        lines[4] = b"\xe9" + lines[4]  # the first column of row 3
        src.write_bytes(b"\n".join(lines) + b"\n")
        first = lines[0].split(b",")[0].decode()
        out = tmp_path / "out.parquet"
        summary = run_batch(task_models.settings(models), BatchOptions(src, out, progress=False))
        bad = rejects(tmp_path / "out.parquet.rejects.jsonl")
        assert summary.rows_in == 6 and pq.read_table(out).column("request_id").to_pylist() == [
            r["request_id"] for i, r in enumerate(rows) if i not in (1, 3)
        ]
        assert [(r["row"], [e["loc"] for e in r["errors"]]) for r in bad] == [
            (1, [["request_id"]]),
            (3, [["features", first]]),
        ]
        assert {e["type"] for r in bad for e in r["errors"]} == {"string_unicode"}


class TestColumns:
    @pytest.mark.parametrize("fmt", ["csv", "parquet"])
    def test_a_column_named_twice_is_refused_naming_it(
        self, task_models: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
    ) -> None:
        """A file with a column twice is refused on one line naming it (it was 'error: KeyError: Field "age"
        exists 2 times in schema'), exit 1, nothing written."""
        models = task_models.workspace(tmp_path, "m1")
        rows = [dict(b["features"], request_id=b["request_id"]) for b in task_models.bodies(3)]
        table = pa.Table.from_pylist(rows)
        table = table.append_column("age", table.column("age"))
        src = tmp_path / f"in.{fmt}"
        if fmt == "csv":
            pacsv.write_csv(table, src)
        else:
            pq.write_table(table, src)
        out = tmp_path / "out.parquet"
        argv = ["--models-dir", str(models), "batch", str(src), str(out), "--no-progress"]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: input columns named more than once ['age']") and len(err.splitlines()) == 1
        assert not out.exists()

    @pytest.mark.parametrize("index_name", [None, "row"])
    def test_a_pandas_index_stored_in_parquet_is_not_an_input(
        self, task_models: Any, tmp_path: Path, index_name: str | None
    ) -> None:
        """A holdout frame saved with ``to_parquet`` after a shuffle or split keeps its index as a column
        (``__index_level_0__``, or the index's name); the file is scored (it was refused as an unknown column)."""
        models = task_models.workspace(tmp_path, "m1")
        rows = [dict(b["features"], request_id=b["request_id"]) for b in task_models.bodies(6)]
        frame = pd.DataFrame(rows, index=pd.Index([7, 3, 11, 0, 5, 2], name=index_name))
        src = tmp_path / "in.parquet"
        frame.to_parquet(src)
        assert len(pq.read_schema(src).names) == len(frame.columns) + 1
        out = tmp_path / "out.parquet"
        summary = run_batch(task_models.settings(models), BatchOptions(src, out, progress=False))
        assert summary.rows_in == 6 and summary.rejected == 0
        scored = pq.read_table(out)
        assert scored.column("request_id").to_pylist() == [r["request_id"] for r in rows]
        assert "__index_level_0__" not in scored.column_names and "row" not in scored.column_names

    def test_an_unnamed_index_column_is_named_as_such(
        self, task_models: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A CSV written by ``DataFrame.to_csv`` with its index has a first column without a name; the refusal
        says what it likely is and how to write the file (it said only "unknown columns ['']")."""
        models = task_models.workspace(tmp_path, "m1")
        rows = [dict(b["features"], request_id=b["request_id"]) for b in task_models.bodies(3)]
        src = tmp_path / "in.csv"
        pd.DataFrame(rows).to_csv(src)
        out = tmp_path / "out.parquet"
        assert main(["--models-dir", str(models), "batch", str(src), str(out), "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert "unknown columns ['']" in err and "index=False" in err and len(err.splitlines()) == 1


class TestRejectInputs:
    def test_csv_rejects_show_the_cells_as_read(self, task_models: Any, tmp_path: Path) -> None:
        """A refused CSV row's input in the rejects file is the file's text: a number cell 'abc' was shown as
        null, which is not what the file holds nor what the error ('a valid number') is about."""
        models = task_models.workspace(tmp_path, "m1")
        rows = [dict(b["features"], request_id=b["request_id"]) for b in task_models.bodies(3)]
        src = tmp_path / "in.csv"
        write_csv_cells(rows, src, "age", {1: "abc", 2: "XY"})
        src.write_bytes(src.read_bytes().replace(b"XY", b"4\xff2"))  # not UTF-8
        out = tmp_path / "out.parquet"
        run_batch(task_models.settings(models), BatchOptions(src, out, progress=False))
        bad = rejects(tmp_path / "out.parquet.rejects.jsonl")
        assert [r["row"] for r in bad] == [1, 2]
        assert all([e["loc"] for e in r["errors"]] == [["features", "age"]] for r in bad)
        assert [r["input"]["age"] for r in bad] == ["abc", "4\\xff2"]
        assert [r["input"]["request_id"] for r in bad] == [rows[1]["request_id"], rows[2]["request_id"]]

    def test_jsonl_rejects_show_the_line_as_read(self, task_models: Any, tmp_path: Path) -> None:
        """A refused JSONL row's input is its object (a line that is no JSON object: its text); every column
        was null, as refused rows are empty in the scored table."""
        models = task_models.workspace(tmp_path, "m1")
        rows = [dict(b["features"], request_id=b["request_id"]) for b in task_models.bodies(3)]
        refused = {**rows[1], "age": "abc"}
        src = tmp_path / "in.jsonl"
        src.write_bytes(b"\n".join([orjson.dumps(rows[0]), orjson.dumps(refused), b'{"age": 4\xff', b""]))
        out = tmp_path / "out.parquet"
        run_batch(task_models.settings(models), BatchOptions(src, out, progress=False))
        bad = rejects(tmp_path / "out.parquet.rejects.jsonl")
        assert [(r["row"], r["input"]) for r in bad] == [(1, refused), (2, '{"age": 4\\xff')]
