"""gRPC ModelInfer against REST /predict, one server, the same run.

    python -m bench.grpc                          # C=32, 3 rounds × 5 s
    python -m bench.grpc --concurrency 64 --duration 3 --rounds 2

One ``modelserve serve`` (one worker, pinned to ``SERVER_CPU``) with
``MODELSERVE_GRPC_PORT`` set. Each round loads it three ways from
``LOAD_CPU``: wrk POSTing /predict bodies; a ``grpc.aio`` client keeping C
one-row ``ModelInfer`` calls (typed contents) in flight; the same client with
100-row calls. The report gives the medians and two ratios (the median of
the per-round ones): one-row gRPC req/s ÷ /predict req/s (target ≥ 1.0), and
100-row rows/s ÷ one-row rows/s (target ≥ 25). The gRPC client is Python, so a low first ratio can be the
client's limit as much as the server's: the server's CPU time per call is
shown for both protocols.

Measured once on the shared two-core machine (C=32, 3 × 5 s): with the
server started as here (its own session, like every bench server) gRPC
one-row req/s was 0.41 × /predict's and 100-row rows/s 30 × one-row's; the
same server started in the caller's session gave 1.9–2.2 × and 19–23 ×. The
kernel's autogroup scheduling gives each session its share of a contended
core, and a gRPC call hops between gRPC's own threads and the event loop,
where an HTTP request stays on one thread, so starving the session hurts
gRPC far more. Read the figures with that in mind.

Models and bodies as for ``python -m bench.run`` (``MODELSERVE_MODELS_DIR``,
``MODELSERVE_FEATURE_TABLE``). Nothing is written but the printed report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from bench.machine import LOAD_CPU, BenchError, require_tools
from bench.run import FEATURE_TABLE, MANIFEST, MODELS_DIR, predict_bodies
from bench.server import Server
from bench.wrk import run_wrk, write_load_script
from harness import free_port

DATATYPE = {"float": "FP32", "int": "INT64", "bool": "BOOL", "string": "BYTES"}
FIELD = {"FP32": "fp32_contents", "INT64": "int64_contents", "BOOL": "bool_contents", "BYTES": "bytes_contents"}
TARGET_RPS_RATIO = 1.0
TARGET_BATCH_RATIO = 25.0


def infer_request(manifest: dict[str, Any], bodies: Sequence[dict[str, Any]]) -> Any:
    """One ModelInferRequest with typed contents carrying ``bodies`` as rows."""
    from app.rpc import grpc_predict_v2_pb2 as pb

    message = pb.ModelInferRequest(model_name="modelserve")
    if any("user_id" in b for b in bodies):
        tensor = message.inputs.add(name="user_id", datatype="BYTES", shape=[len(bodies)])
        tensor.contents.bytes_contents.extend(b["user_id"].encode() for b in bodies)
    for f in manifest["features"]:
        if f["source"] != "request":
            continue
        datatype = DATATYPE[f["dtype"]]
        values = [b["features"][f["name"]] for b in bodies]
        if datatype == "FP32":
            values = [0.0 if v is None else v for v in values]  # FP32 carries no null
        if datatype == "BYTES":
            values = [str(v).encode() for v in values]
        tensor = message.inputs.add(name=f["name"], datatype=datatype, shape=[len(bodies)])
        getattr(tensor.contents, FIELD[datatype]).extend(values)
    return message


async def grpc_load(target: str, messages: Sequence[Any], concurrency: int, duration_s: float) -> tuple[int, int]:
    """(calls answered OK, calls failed) with ``concurrency`` calls in flight for ``duration_s``."""
    import grpc

    from app.rpc import grpc_predict_v2_pb2_grpc as pb_grpc

    ok = failed = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelInfer(messages[0], timeout=10)
        deadline = time.monotonic() + duration_s

        async def worker(offset: int) -> None:
            nonlocal ok, failed
            i = offset
            while time.monotonic() < deadline:
                try:
                    await stub.ModelInfer(messages[i % len(messages)], timeout=10)
                    ok += 1
                except grpc.aio.AioRpcError:
                    failed += 1
                i += concurrency

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return ok, failed


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def measure_grpc(target: str, rows: int, concurrency: int, duration_s: int) -> tuple[float, int, int]:
    """(calls/s, failed, answered) of ``rows``-row calls, from a fresh client process pinned to ``LOAD_CPU``.

    A fresh process, like wrk: a gRPC client in the process that started the
    server runs several times slower.
    """
    command = [sys.executable, "-m", "bench.grpc", "--client", target, "--batch", str(rows)]
    command += ["--concurrency", str(concurrency), "--duration", str(duration_s)]
    proc = subprocess.run(
        ["taskset", "-c", str(LOAD_CPU), *command], capture_output=True, text=True, timeout=duration_s + 120
    )
    if proc.returncode != 0:
        raise BenchError(f"gRPC client failed: {proc.stderr.strip()[-1000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["ok"] / result["seconds"], result["failed"], result["ok"]


def client(target: str, rows: int, concurrency: int, duration_s: int) -> None:
    """The load client: prints ``{"ok", "failed", "seconds"}``."""
    manifest = json.loads(MANIFEST.read_text())
    bodies, _ = predict_bodies()
    messages = [infer_request(manifest, [bodies[(i + k) % len(bodies)] for k in range(rows)]) for i in range(100)]
    t0 = time.monotonic()
    ok, failed = asyncio.run(grpc_load(target, messages, concurrency, duration_s))
    print(json.dumps({"ok": ok, "failed": failed, "seconds": time.monotonic() - t0}))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--client", metavar="HOST:PORT", help=argparse.SUPPRESS)  # the load client's own run
    args = parser.parse_args(argv)
    if args.client:
        client(args.client, args.batch, args.concurrency, args.duration)
        return 0
    try:
        require_tools()
        if not MANIFEST.exists():
            raise BenchError(f"{MANIFEST} not found: run `make models` first")
        bodies, source = predict_bodies()
        port, grpc_port = free_port(), free_port()
        env = {
            "MODELSERVE_MODELS_DIR": str(MODELS_DIR),
            "MODELSERVE_FEATURE_TABLE": str(FEATURE_TABLE),
            "MODELSERVE_GRPC_PORT": str(grpc_port),
            "MODELSERVE_WORKERS": "1",
        }
        modelserve = Path(sys.executable).parent / "modelserve"
        rest, single, batch, cpu, rest_cpu = [], [], [], [], []
        with tempfile.TemporaryDirectory(prefix="bench-grpc-") as scratch:
            script = write_load_script(Path(scratch), bodies)
            command = [str(modelserve), "serve", "--host", "127.0.0.1", "--port", str(port)]
            url = f"http://127.0.0.1:{port}"
            with Server(
                "service", command, ready_url=url + "/health/ready", log_path=Path(scratch) / "server.log", env=env
            ) as server:
                target = f"127.0.0.1:{grpc_port}"
                proc = psutil.Process(server.pid)
                measure_grpc(target, 1, args.concurrency, 1)  # warm-up
                for _ in range(args.rounds):
                    before = _cpu(proc)
                    wrk = run_wrk(url + "/predict", script, args.concurrency, args.duration)
                    if wrk.non2xx or wrk.errors:
                        raise BenchError(f"/predict: {wrk.non2xx} non-2xx, {wrk.errors} errors")
                    rest.append(wrk.requests / wrk.duration_s)
                    rest_cpu.append((_cpu(proc) - before) / wrk.requests)
                    before = _cpu(proc)
                    rps, failed, calls = measure_grpc(target, 1, args.concurrency, args.duration)
                    cpu.append((_cpu(proc) - before) / calls)
                    single.append(rps)
                    rows, failed_batch, _ = measure_grpc(target, args.batch, args.concurrency, args.duration)
                    batch.append(rows * args.batch)
                    if failed or failed_batch:
                        raise BenchError(f"gRPC: {failed + failed_batch} failed calls")
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    rest_m, single_m, batch_m = (statistics.median(x) for x in (rest, single, batch))
    print(f"bodies: {source}; C={args.concurrency}, {args.rounds} rounds × {args.duration} s, one worker")
    print("| load | req/s (median) | rows/s | rounds |")
    print("|---|---:|---:|---|")
    print(f"| REST /predict (wrk) | {rest_m:,.0f} | {rest_m:,.0f} | {', '.join(f'{x:,.0f}' for x in rest)} |")
    print(
        f"| gRPC ModelInfer, 1 row (grpc.aio) | {single_m:,.0f} | {single_m:,.0f} | "
        f"{', '.join(f'{x:,.0f}' for x in single)} |"
    )
    print(
        f"| gRPC ModelInfer, {args.batch} rows | {batch_m / args.batch:,.0f} | {batch_m:,.0f} | "
        f"{', '.join(f'{x:,.0f}' for x in batch)} |"
    )
    print(
        f"server CPU per call: /predict {statistics.median(rest_cpu) * 1e3:.2f} ms, "
        f"1-row ModelInfer {statistics.median(cpu) * 1e3:.2f} ms"
    )
    # Ratios per round (each from runs taken back to back), then their median: drift hits both sides alike.
    ratio = statistics.median(g / r for g, r in zip(single, rest, strict=True))
    batch_ratio = statistics.median(b / g for b, g in zip(batch, single, strict=True))
    print(f"gRPC 1-row req/s ÷ /predict req/s: {ratio:.2f} (target ≥ {TARGET_RPS_RATIO}) ")
    print(f"gRPC {args.batch}-row rows/s ÷ 1-row rows/s: {batch_ratio:.1f} (target ≥ {TARGET_BATCH_RATIO})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
