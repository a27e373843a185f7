"""How long ``modelserve evaluate`` takes over a large log: Parquet warehouse, and the same data as JSONL.

Writes ``--predictions`` prediction records over seven days and ``--labels``
labels (each a distinct request, arriving 1–48 h after its prediction) with
DuckDB straight into the warehouse layout of ``app.jobs.warehouse``
(``kind=…/date=…/hour=…/part-<id>.parquet`` plus the commit log), and a copy
of the same rows as ``predictions-*.jsonl`` / ``labels-*.jsonl`` in a second
directory; then times ``evaluate`` (default bootstrap, 200 replicates) over
each, in this process, and prints the figures.

    python -m bench.evaluate --dir /tmp/bench-evaluate                 # 5M predictions, 1M labels
    python -m bench.evaluate --dir /tmp/bench-evaluate --predictions 500000 --labels 100000 --no-jsonl
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from app.jobs.warehouse import COMMIT_LOG, WAREHOUSE_DIR

START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 7


def write_model(models: Path) -> None:
    """A binary model's manifest (the evaluate job reads the task, classes and holdout metrics from it)."""
    manifest = {
        "version": "v1",
        "created_at": "2026-01-01T00:00:00Z",
        "task": "binary_classification",
        "features": [{"name": n, "dtype": "float", "source": "request"} for n in ("x1", "x2")],
        "outputs": {"label": "label", "probabilities": "probabilities", "classes": [0, 1], "positive_class": 1},
        "sample": {"request": {}, "row": {}, "expected": {}},
        "metrics": {"roc_auc": 0.86, "accuracy": 0.78, "log_loss": 0.45},
        "files": {},
    }
    (models / "v1").mkdir(parents=True, exist_ok=True)
    (models / "v1" / "manifest.json").write_bytes(orjson.dumps(manifest))


def generate(con: object, predictions: int, labels: int) -> None:
    con.execute(  # type: ignore[attr-defined]
        f"""CREATE TABLE p AS SELECT
              TIMESTAMPTZ '{START.isoformat()}'
                + to_microseconds(CAST(i * ({DAYS} * 86400e6 / {predictions}) AS BIGINT)) AS timestamp,
              'r' || i AS request_id, 'v1' AS model_version, CASE WHEN i % 10 = 0 THEN 'treatment' ELSE 'control' END
                AS variant, 'u' || (i % 50000) AS user_id, x1, x2,
              1 / (1 + exp(-(2 * x1 + x2))) AS probability, 0.001 + random() * 0.004 AS latency, i
            FROM (SELECT i, sqrt(-2 * ln(random())) * cos(2 * pi() * random()) AS x1,
                         sqrt(-2 * ln(random())) * cos(2 * pi() * random()) AS x2 FROM range({predictions}) t(i))"""
    )
    every = max(1, predictions // labels)
    con.execute(  # type: ignore[attr-defined]
        f"""CREATE TABLE l AS SELECT timestamp + to_microseconds(CAST((1 + random() * 47) * 3600e6 AS BIGINT))
              AS timestamp, request_id, CAST(CAST(random() < probability AS INTEGER) AS VARCHAR) AS label,
              NULL::TIMESTAMPTZ AS observed_at, 'api' AS source
            FROM p WHERE i % {every} = 0 LIMIT {labels}"""
    )
    con.execute(  # type: ignore[attr-defined]
        """CREATE VIEW prediction_rows AS SELECT timestamp, request_id, model_version, variant, user_id,
             json_object('x1', x1, 'x2', x2) AS features, CAST(probability >= 0.5 AS BIGINT) AS prediction,
             probability, latency, 'none' AS feature_tier FROM p"""
    )


def write_warehouse(con: object, log_dir: Path) -> None:
    root = log_dir / WAREHOUSE_DIR
    for kind, view in (("prediction", "prediction_rows"), ("label", "l")):
        target = root / f"kind={kind}"
        root.mkdir(parents=True, exist_ok=True)
        con.execute(  # type: ignore[attr-defined]
            f"""COPY (SELECT *, strftime(timestamp, '%Y-%m-%d') AS date, strftime(timestamp, '%H') AS hour
                     FROM {view}) TO '{target}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date, hour),
                     FILENAME_PATTERN 'part-{{uuid}}', OVERWRITE_OR_IGNORE)"""
        )
    with open(root / COMMIT_LOG, "ab") as f:
        for part in sorted(root.glob("kind=*/date=*/hour=*/part-*.parquet")):
            f.write(orjson.dumps({"source": f"bench-{part.name}", "hash": part.name[5:-8]}) + b"\n")


def write_jsonl(con: object, log_dir: Path) -> None:
    con.execute(  # type: ignore[attr-defined]
        f"COPY (SELECT 'prediction' AS kind, * FROM prediction_rows) TO '{log_dir / 'predictions-bench.jsonl'}' "
        "(FORMAT json)"
    )
    con.execute(  # type: ignore[attr-defined]
        f"COPY (SELECT 'label' AS kind, timestamp, request_id, CAST(label AS INTEGER) AS label, observed_at, source "
        f"FROM l) TO '{log_dir / 'labels-bench.jsonl'}' (FORMAT json)"
    )


def timed(log_dir: Path, models: Path) -> tuple[float, int, int]:
    from app.jobs.evaluate import evaluate

    started = time.perf_counter()
    report = evaluate(log_dir, models, timedelta(days=3650))
    seconds = time.perf_counter() - started
    return seconds, sum(g.predictions for g in report.groups), sum(g.labelled for g in report.groups)


def main() -> None:
    import duckdb

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, required=True, help="where the data goes (must not exist)")
    ap.add_argument("--predictions", type=int, default=5_000_000)
    ap.add_argument("--labels", type=int, default=1_000_000)
    ap.add_argument("--no-jsonl", action="store_true", help="only the Parquet warehouse")
    args = ap.parse_args()
    args.dir.mkdir(parents=True)
    models, parquet, jsonl = args.dir / "models", args.dir / "parquet", args.dir / "jsonl"
    write_model(models)
    parquet.mkdir()
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    generate(con, args.predictions, args.labels)
    write_warehouse(con, parquet)
    if not args.no_jsonl:
        jsonl.mkdir()
        write_jsonl(con, jsonl)
    con.close()
    print(f"generated {args.predictions} predictions, {args.labels} labels in {time.perf_counter() - started:.1f} s")
    seconds, n, labelled = timed(parquet, models)
    print(f"evaluate, Parquet warehouse: {seconds:.2f} s ({n} predictions, {labelled} labelled)")
    if not args.no_jsonl:
        seconds, n, labelled = timed(jsonl, models)
        print(f"evaluate, JSONL only:        {seconds:.2f} s ({n} predictions, {labelled} labelled)")


if __name__ == "__main__":
    main()
