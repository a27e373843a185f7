"""Benchmarks of the offline jobs and of the prediction log's cost on /predict.

    python -m bench.jobs                       # all three
    python -m bench.jobs --only batch,sink     # batch | sink | log
    python -m bench.jobs --rows 200000         # a smaller batch file

* ``batch``: ``modelserve batch`` on N generated rows (default 1,000,000),
  Parquet → Parquet, as a subprocess: rows/s end to end (process start to
  exit) and as the job reports it, rows per CPU-second (the machine is
  shared: wall figures move with its load), and the peak RSS of the process.
* ``sink``: 10,000 scored rows posted through the job's ``Sink`` to a local
  server that waits 20 ms per request: concurrently, against (a) the same
  POSTs one at a time and (b) a naive client sending one row per request
  (timed on 300 rows, extrapolated), with the client's CPU per POST.
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


def run_batch_cli(env: dict[str, str], args: list[str]) -> tuple[float, int, str, float]:
    """(wall seconds, peak RSS bytes, stderr, CPU seconds) of one ``modelserve batch`` process."""
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
    return wall, usage.ru_maxrss * 1024, text, usage.ru_utime + usage.ru_stime


def bench_batch(models: Path, table: Path, tmp: Path, rows: int) -> tuple[list[str], list[Check]]:
    src = tmp / "batch-in.parquet"
    print(f"generating {rows:,} rows …")
    generate_input(table, rows, src)
    env = {**os.environ, "MODELSERVE_FEATURE_TABLE": str(table)}
    args = ["--models-dir", str(models), "batch", str(src), str(tmp / "batch-out.parquet"), "--no-progress"]
    print("running modelserve batch …")
    load_before = os.getloadavg()[0]
    wall, rss, err, cpu = run_batch_cli(env, args)
    load_after = os.getloadavg()[0]
    job_line = next((line for line in err.splitlines() if line.startswith("scored")), "")
    out_rows = pq.ParquetFile(tmp / "batch-out.parquet").metadata.num_rows
    rate = rows / wall
    lines = [
        "| batch (Parquet → Parquet) | figure |",
        "|---|---|",
        f"| rows | {rows:,} in, {out_rows:,} out |",
        f"| wall, process start to exit | {wall:.2f} s |",
        f"| rows/s end to end | {rate:,.0f} |",
        f"| CPU (user + system, the process and its children) | {cpu:.2f} s |",
        f"| rows per CPU-second | {rows / cpu:,.0f} |",
        f"| load average (1 min) before / after | {load_before:.2f} / {load_after:.2f} on {os.cpu_count()} CPUs |",
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
    """The sink stage of ``modelserve batch`` on the scored rows, against two sequential baselines.

    (a) the same POSTs (``batch_rows`` rows each) sent one at a time, and (b) a naive client
    that POSTs one row per request, one at a time — timed on a sample of ``naive_sample`` rows
    and extrapolated linearly to all rows (each of its requests costs the same fixed delay).
    Client CPU is measured too: it bounds what concurrency can gain at equal batching.
    """

    from app.jobs.batch import BatchOptions, ChunkResult, _sink_items
    from app.jobs.sink import Sink
    from harness import ManagedProcess, free_port, tcp_open

    src = tmp / "sink-in.parquet"
    generate_input(table, rows, src, seed=2)
    out = tmp / "sink-scored.parquet"
    env = {**os.environ, "MODELSERVE_FEATURE_TABLE": str(table)}
    run_batch_cli(env, ["--models-dir", str(models), "batch", str(src), str(out), "--no-progress"])
    scored = pq.read_table(out)
    result = ChunkResult(0, 0, scored, [], {}, rows, np.arange(rows))
    batch_rows, concurrency, naive_sample = 10, 100, 300
    default_rows, default_conc = BatchOptions.sink_batch, BatchOptions.sink_concurrency
    items = _sink_items("bench", result, result.kept, batch_rows)
    default_items = _sink_items("bench-default", result, result.kept, default_rows)
    sample = ChunkResult(0, 0, scored.slice(0, naive_sample), [], {}, naive_sample, np.arange(naive_sample))
    naive_items = _sink_items("bench-naive", sample, sample.kept, 1)
    port = free_port()
    slow_sink = ManagedProcess(
        "slow sink",
        [sys.executable, "-m", "bench.jobs", "--serve-slow-sink", str(port)],
        log_path=tmp / "slow-sink.log",
        ready=tcp_open(port),
        ready_timeout=30,
        poll_interval=0.1,
    )
    timings: dict[str, tuple[float, float, int]] = {}
    with slow_sink:

        async def post(batch: list[tuple[str, Any]], conc: int) -> tuple[float, float, int]:
            sink = Sink(f"http://127.0.0.1:{port}/", concurrency=conc)
            await sink.post_all(batch[:conc])  # connect every slot first: no handshakes in the timing
            began, cpu = time.perf_counter(), time.process_time()
            await sink.post_all(batch)
            elapsed, used = time.perf_counter() - began, time.process_time() - cpu
            await sink.close()
            return elapsed, used, len(batch)

        runs = (
            ("a", items, 1),
            ("concurrent", items, concurrency),
            ("b", naive_items, 1),
            ("default", default_items, default_conc),
        )
        for label, batch, conc in runs:
            print(f"sink {label}: {len(batch):,} POSTs at concurrency {conc} …")
            timings[label] = asyncio.run(post(batch, conc))
    naive_total = timings["b"][0] * rows / naive_sample
    ratio_a = timings["a"][0] / timings["concurrent"][0]
    ratio_b_conc = naive_total / timings["concurrent"][0]
    ratio_b_default = naive_total / timings["default"][0]

    def row(name: str, label: str) -> str:
        wall, cpu, posts = timings[label]
        return f"| {name} | {posts:,} | {wall:.2f} s | {cpu / posts * 1000:.2f} ms |"

    lines = [
        f"| sink: {rows:,} scored rows, server +{SINK_DELAY * 1000:.0f} ms per request | POSTs | wall "
        "| client CPU per POST |",
        "|---|---|---|---|",
        row(f"(a) sequential, {batch_rows} rows per POST, one at a time", "a"),
        row(f"concurrent, {batch_rows} rows per POST, {concurrency} in flight", "concurrent"),
        row(f"(b) naive sequential, 1 row per POST: measured on {naive_sample} rows", "b"),
        f"| (b) extrapolated to {rows:,} rows (× {rows / naive_sample:.1f}) | {rows:,} | {naive_total:.1f} s | |",
        row(f"the job's defaults: {default_rows} rows per POST, {default_conc} in flight", "default"),
        "",
        f"Speed-up over (a), equal batching: {ratio_a:.1f}× — bounded near (delay + client CPU) ÷ client CPU "
        "per POST, as the POSTs' client work is serial on one event loop.",
        f"Speed-up over (b), naive one row per request (extrapolated): {ratio_b_conc:,.0f}× "
        f"with {batch_rows} rows per POST at {concurrency} in flight, {ratio_b_default:,.0f}× with the job's defaults.",
        "Each timing starts after every connection is open (one warm-up round of POSTs, not counted).",
    ]
    return lines, [
        Check("sink speed-up over (a) same POSTs one at a time", ratio_a, 50, True, "×"),
        Check("sink speed-up over (b) naive 1 row per POST, job defaults", ratio_b_default, 50, True, "×"),
    ]


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
    # Like the other suites, a missed target is reported, not an error: `make bench` runs them all.
    return 0


if __name__ == "__main__":
    sys.exit(main())
