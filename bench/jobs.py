"""Benchmarks of the offline jobs and of the prediction log's cost on /predict.

    python -m bench.jobs                       # all three
    python -m bench.jobs --only batch,sink     # batch | sink | log
    python -m bench.jobs --rows 200000         # a smaller batch file

* ``batch``: ``modelserve batch`` on N generated rows (default 1,000,000),
  Parquet → Parquet, as a subprocess: rows/s end to end (process start to
  exit) and as the job reports it, and the peak RSS of the process.
* ``sink``: 10,000 rows posted with ``--sink`` to a local server that waits
  20 ms per request, sequentially (``--sink-concurrency 1``) and concurrently.
* ``log``: ``/predict`` req/s at C=64 with ``MODELSERVE_LOG_DIR`` set versus
  unset, paired rounds through ``bench.harness`` (wrk, pinned servers).

Models and the feature table are the repository's (``make models``); without
them a small set is trained into a temporary directory. The report is printed
and written to ``bench/results/jobs.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.harness import ROOT, Check, Plan, run_bench

MODELSERVE = Path(sys.executable).parent / "modelserve"
RESULTS = ROOT / "bench" / "results" / "jobs.md"
SINK_DELAY = 0.020


def workspace(tmp: Path) -> tuple[Path, Path]:
    models = ROOT / os.environ.get("MODELSERVE_MODELS_DIR", "models")
    table = ROOT / os.environ.get("MODELSERVE_FEATURE_TABLE", "data/features.parquet")
    if (models / "production").exists() and table.is_file():
        return models, table
    from app.training.train import train

    print("no trained models in the repository: training a small set into a temporary directory")
    train(tmp / "models", tmp / "data", seed=7)
    return tmp / "models", tmp / "data" / "features.parquet"


def generate_input(table: Path, rows: int, path: Path, seed: int = 1) -> None:
    """``rows`` batch rows (user_id + request features), drawn like the training traffic."""
    from app.training.data import _draw_request_features

    users = pd.read_parquet(table)
    rng = np.random.default_rng(seed)
    written = 0
    writer: pq.ParquetWriter | None = None
    while written < rows:
        n = min(200_000, rows - written)
        pick = rng.integers(0, len(users), n)
        req = _draw_request_features(rng, users["days_since_signup"].to_numpy()[pick], None)
        chunk = pa.table(
            {
                "user_id": pa.array(users["user_id"].to_numpy()[pick].astype(str)),
                "amount": req["amount"],
                "device": pa.array(req["device"].astype(str)),
                "score": pa.array(req["score"], from_pandas=True),
                "first_purchase": req["first_purchase"],
            }
        )
        writer = writer or pq.ParquetWriter(path, chunk.schema)
        writer.write_table(chunk)
        written += n
    assert writer is not None
    writer.close()


def run_batch_cli(env: dict[str, str], args: list[str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, stderr) of one ``modelserve batch`` process."""
    with tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        proc = subprocess.Popen([str(MODELSERVE), *args], env=env, stderr=err, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (peak RSS)
        wall = time.perf_counter() - began
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"modelserve batch failed:\n{text[-2000:]}")
    return wall, usage.ru_maxrss * 1024, text


def bench_batch(models: Path, table: Path, tmp: Path, rows: int) -> tuple[list[str], list[Check]]:
    src = tmp / "batch-in.parquet"
    print(f"generating {rows:,} rows …")
    generate_input(table, rows, src)
    env = {**os.environ, "MODELSERVE_FEATURE_TABLE": str(table)}
    args = ["--models-dir", str(models), "batch", str(src), str(tmp / "batch-out.parquet"), "--no-progress"]
    print("running modelserve batch …")
    wall, rss, err = run_batch_cli(env, args)
    job_line = next((line for line in err.splitlines() if line.startswith("scored")), "")
    out_rows = pq.ParquetFile(tmp / "batch-out.parquet").metadata.num_rows
    rate = rows / wall
    lines = [
        "| batch (Parquet → Parquet) | figure |",
        "|---|---|",
        f"| rows | {rows:,} in, {out_rows:,} out |",
        f"| wall, process start to exit | {wall:.2f} s |",
        f"| rows/s end to end | {rate:,.0f} |",
        f"| the job's own summary | {job_line} |",
        f"| peak RSS | {rss / 1e6:,.0f} MB |",
    ]
    return lines, [
        Check("batch rows/s end to end", rate, 200_000, True),
        Check("batch peak RSS", rss / 1e6, 1000, False, " MB"),
    ]


# --- sink ------------------------------------------------------------------------
def serve_slow_sink(port: int) -> None:
    """A sink that answers every request after ``SINK_DELAY`` (run in its own process)."""
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await asyncio.sleep(SINK_DELAY)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def bench_sink(models: Path, table: Path, tmp: Path, rows: int = 10_000) -> tuple[list[str], list[Check]]:
    """The sink stage of ``modelserve batch`` on the scored rows: the same POSTs one at a time vs concurrently."""
    import httpx

    from app.jobs.batch import ChunkResult, _sink_items
    from app.jobs.sink import Sink
    from bench.harness import free_port

    src = tmp / "sink-in.parquet"
    generate_input(table, rows, src, seed=2)
    out = tmp / "sink-scored.parquet"
    env = {**os.environ, "MODELSERVE_FEATURE_TABLE": str(table)}
    run_batch_cli(env, ["--models-dir", str(models), "batch", str(src), str(out), "--no-progress"])
    scored = pq.read_table(out)
    result = ChunkResult(0, 0, scored, [], {}, rows, np.arange(rows))
    batch_rows, concurrency = 10, 100
    items = _sink_items("bench", result, result.kept, batch_rows)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.jobs", "--serve-slow-sink", str(port)])
    timings: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(f"http://127.0.0.1:{port}/", content=b"{}", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

        async def post(conc: int) -> float:
            sink = Sink(f"http://127.0.0.1:{port}/", concurrency=conc)
            began = time.perf_counter()
            await sink.post_all(items)
            elapsed = time.perf_counter() - began
            await sink.close()
            return elapsed

        for label, conc in (("sequential", 1), ("concurrent", concurrency)):
            print(f"sink {label} …")
            timings[label] = asyncio.run(post(conc))
    finally:
        proc.terminate()
        proc.wait(10)
    speedup = timings["sequential"] / timings["concurrent"]
    lines = [
        f"| sink: {rows:,} scored rows, {len(items):,} POSTs of {batch_rows} rows, "
        f"server +{SINK_DELAY * 1000:.0f} ms | wall |",
        "|---|---|",
        f"| sequential (concurrency 1) | {timings['sequential']:.2f} s |",
        f"| concurrent (concurrency {concurrency}) | {timings['concurrent']:.2f} s |",
        f"| speed-up | {speedup:.1f}× |",
    ]
    return lines, [Check("sink concurrent ÷ sequential speed-up", speedup, 50, True, "×")]


# --- prediction log on /predict -----------------------------------------------
def bench_log(models: Path, table: Path, duration: int, rounds: int) -> tuple[list[str], list[Check]]:
    from bench.run import predict_bodies, service_scenario

    os.environ.setdefault("MODELSERVE_MODELS_DIR", str(models))
    os.environ.setdefault("MODELSERVE_FEATURE_TABLE", str(table))
    bodies, _ = predict_bodies()
    env = {"MODELSERVE_MODELS_DIR": str(models), "MODELSERVE_FEATURE_TABLE": str(table)}
    scenarios = [
        service_scenario("log-off", bodies, env),
        service_scenario("log-on", bodies, {**env, "MODELSERVE_LOG_DIR": "{scratch}/log"}),
    ]
    results = run_bench(scenarios, Plan(concurrency=(64,), duration_s=duration, rounds=rounds), baseline="log-off")
    off, on = results.summary("log-off", 64), results.summary("log-on", 64)
    assert off is not None and on is not None
    lines = [
        "| /predict at C=64 | req/s (median) | p50 ms | p99 ms |",
        "|---|---|---|---|",
        f"| log off | {off.rps:,.0f} | {off.p50_ms:.2f} | {off.p99_ms:.2f} |",
        f"| log on | {on.rps:,.0f} | {on.p50_ms:.2f} | {on.p99_ms:.2f} |",
        f"| on ÷ off (paired rounds) | {on.rps_ratio or 0:.3f} | | |",
    ]
    return lines, [Check("/predict req/s log on ÷ off at C=64", on.rps_ratio, 0.9, True)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.jobs", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="batch,sink,log", help="comma-separated: batch, sink, log")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows for the batch benchmark")
    p.add_argument("--duration", type=int, default=int(os.environ.get("BENCH_DURATION", "5")))
    p.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")))
    p.add_argument("--serve-slow-sink", type=int, default=None, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_slow_sink is not None:
        serve_slow_sink(args.serve_slow_sink)
        return 0
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    sections: list[str] = []
    checks: list[Check] = []
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp_name:
        tmp = Path(tmp_name)
        models, table = workspace(tmp)
        for name, run in (
            ("batch", lambda: bench_batch(models, table, tmp, args.rows)),
            ("sink", lambda: bench_sink(models, table, tmp)),
            ("log", lambda: bench_log(models, table, args.duration, args.rounds)),
        ):
            if name in only:
                lines, found = run()
                sections.append("\n".join(lines))
                checks.extend(found)
    report = "\n\n".join(
        [
            "# Offline jobs and prediction log",
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
            *sections,
            "\n".join(c.render() for c in checks),
        ]
    )
    print(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report + "\n")
    return 0 if all(c.passed is not False for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
