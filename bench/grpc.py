"""gRPC ModelInfer against REST /predict and against the gRPC floor, pinned alike, the same run.

    flock /tmp/bench.lock python -m bench.grpc                 # C=32, 3 rounds × 5 s
    flock /tmp/bench.lock python -m bench.grpc --no-shadow     # MODELSERVE_SHADOW_ENABLED=false

Two servers, both started by ``bench.server.Server`` (pinned to
``SERVER_CPU``, in their own session): one ``modelserve serve`` (one worker)
with ``MODELSERVE_GRPC_PORT`` set, serving both protocols, and the gRPC floor
(``--floor PORT``: a ``grpc.aio`` server that answers canned bytes, what the
protocol stack alone costs). Each round loads them from ``LOAD_CPU``, back
to back: wrk POSTing /predict bodies; a ``grpc.aio`` client keeping C
one-row ``ModelInfer`` calls (typed contents) in flight; the same with
100-row calls; the one-row calls against the floor. Every load client is a
fresh child of this process pinned with ``taskset``, so both protocols'
clients are started and scheduled alike; the gRPC client sends requests
serialized beforehand and does not parse answers, so its CPU goes to the
calls as wrk's does.

The report gives the medians, the server's CPU per call and how busy server
and client were (a figure is the server's only when the server is ~100 %
busy), and the ratios (each the median of the per-round ones): one-row gRPC
req/s ÷ /predict req/s (target ≥ 1.0), 100-row rows/s ÷ one-row rows/s
(target ≥ 25), floor req/s ÷ /predict req/s. Figures: bench/README.md.

Models and bodies as for ``python -m bench.run`` (``MODELSERVE_MODELS_DIR``,
``MODELSERVE_FEATURE_TABLE``). Nothing is written but the printed report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
METHOD = "/inference.GRPCInferenceService/ModelInfer"
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


async def grpc_load(target: str, payloads: Sequence[bytes], concurrency: int, duration_s: float) -> tuple[int, int]:
    """(calls answered OK, calls failed) with ``concurrency`` calls in flight for ``duration_s``.

    The requests go out as bytes serialized beforehand and the answers are not
    parsed (one is, first, to check it): the client's CPU goes to the calls
    themselves, as wrk's does.
    """
    import grpc

    from app.rpc import grpc_predict_v2_pb2 as pb

    ok = failed = 0
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD)  # bytes in, bytes out
        first = pb.ModelInferResponse.FromString(await call(payloads[0], timeout=10))
        if not first.outputs:
            raise BenchError(f"ModelInfer answered no outputs: {first}")
        deadline = time.monotonic() + duration_s

        async def worker(offset: int) -> None:
            nonlocal ok, failed
            i = offset
            while time.monotonic() < deadline:
                try:
                    await call(payloads[i % len(payloads)], timeout=10)
                    ok += 1
                except grpc.aio.AioRpcError:
                    failed += 1
                i += concurrency

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return ok, failed


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


@dataclass
class Run:
    """One load run against the server: what it got and what it cost each side."""

    calls: int
    seconds: float
    server_cpu: float
    """Server CPU seconds during the run."""
    client_cpu: float
    """Load client CPU seconds during the run."""

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    @property
    def server_busy(self) -> float:
        """Share of its core the server used (1.0: saturated, the figure is the server's)."""
        return self.server_cpu / self.seconds

    @property
    def client_busy(self) -> float:
        return self.client_cpu / self.seconds


def measure_rest(url: str, script: Path, proc: psutil.Process, concurrency: int, duration_s: int) -> Run:
    """wrk on /predict from ``LOAD_CPU``."""
    before, children = _cpu(proc), resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk = run_wrk(url + "/predict", script, concurrency, duration_s)
    after, children_after = _cpu(proc), resource.getrusage(resource.RUSAGE_CHILDREN)
    if wrk.non2xx or wrk.errors:
        raise BenchError(f"/predict: {wrk.non2xx} non-2xx, {wrk.errors} errors")
    client_cpu = (children_after.ru_utime + children_after.ru_stime) - (children.ru_utime + children.ru_stime)
    return Run(wrk.requests, wrk.duration_s, after - before, client_cpu)


def measure_grpc(target: str, rows: int, proc: psutil.Process, concurrency: int, duration_s: int) -> Run:
    """``rows``-row ModelInfer calls from a fresh client process pinned to ``LOAD_CPU``, like wrk.

    A fresh process: a gRPC client in the process that started the server
    runs several times slower. Started the way wrk is (a child of this
    process, in its session), so both protocols' clients are scheduled alike.
    """
    command = [sys.executable, "-m", "bench.grpc", "--client", target, "--batch", str(rows)]
    command += ["--concurrency", str(concurrency), "--duration", str(duration_s)]
    before = _cpu(proc)
    done = subprocess.run(
        ["taskset", "-c", str(LOAD_CPU), *command], capture_output=True, text=True, timeout=duration_s + 120
    )
    if done.returncode != 0:
        raise BenchError(f"gRPC client failed: {done.stderr.strip()[-1000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["failed"]:
        raise BenchError(f"gRPC: {result['failed']} failed calls")
    # The server's CPU over the whole client process (start-up included) is spread over its calls only.
    return Run(result["ok"], result["seconds"], _cpu(proc) - before, result["cpu"])


def client(target: str, rows: int, concurrency: int, duration_s: int) -> None:
    """The load client: prints ``{"ok", "failed", "seconds", "cpu"}`` (``cpu``: its own CPU seconds)."""
    manifest = json.loads(MANIFEST.read_text())
    bodies, _ = predict_bodies()
    messages = [infer_request(manifest, [bodies[(i + k) % len(bodies)] for k in range(rows)]) for i in range(100)]
    payloads = [m.SerializeToString() for m in messages]
    cpu0, t0 = time.process_time(), time.monotonic()
    ok, failed = asyncio.run(grpc_load(target, payloads, concurrency, duration_s))
    result = {"ok": ok, "failed": failed, "seconds": time.monotonic() - t0, "cpu": time.process_time() - cpu0}
    print(json.dumps(result))


def floor(port: int) -> None:
    """The gRPC floor: a ``grpc.aio`` server on uvloop whose ModelInfer answers canned bytes at once.

    What one call costs the protocol stack alone (the service's own stack:
    grpcio's asyncio server on uvloop, one thread), as ``bench.floor`` is for HTTP.
    """
    import grpc
    import uvloop

    from app.rpc import grpc_predict_v2_pb2 as pb

    answer = pb.ModelInferResponse(model_name="modelserve", model_version="floor", id="floor")
    answer.outputs.add(name="label", datatype="INT64", shape=[1]).contents.int64_contents.append(1)
    canned = answer.SerializeToString()

    async def infer(request: bytes, context: Any) -> bytes:
        return canned

    async def serve() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        handler = grpc.unary_unary_rpc_method_handler(infer)  # bytes in, bytes out
        service, method = METHOD.strip("/").split("/")
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: handler}),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(serve())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--no-shadow", action="store_true", help="serve with MODELSERVE_SHADOW_ENABLED=false")
    parser.add_argument("--client", metavar="HOST:PORT", help=argparse.SUPPRESS)  # the load client's own run
    parser.add_argument("--floor", metavar="PORT", type=int, help=argparse.SUPPRESS)  # the gRPC floor server
    args = parser.parse_args(argv)
    if args.client:
        client(args.client, args.batch, args.concurrency, args.duration)
        return 0
    if args.floor:
        floor(args.floor)
        return 0
    try:
        require_tools()
        if not MANIFEST.exists():
            raise BenchError(f"{MANIFEST} not found: run `make models` first")
        bodies, source = predict_bodies()
        port, grpc_port, floor_port = free_port(), free_port(), free_port()
        env = {
            "MODELSERVE_MODELS_DIR": str(MODELS_DIR),
            "MODELSERVE_FEATURE_TABLE": str(FEATURE_TABLE),
            "MODELSERVE_GRPC_PORT": str(grpc_port),
            "MODELSERVE_WORKERS": "1",
            "MODELSERVE_MAX_QUEUE_MS": "60000",  # closed loop: measure throughput, not shedding (as bench.run)
        }
        if args.no_shadow:
            env["MODELSERVE_SHADOW_ENABLED"] = "false"
        modelserve = Path(sys.executable).parent / "modelserve"
        rest: list[Run] = []
        single: list[Run] = []
        batch: list[Run] = []
        floors: list[Run] = []
        load_before = os.getloadavg()
        with tempfile.TemporaryDirectory(prefix="bench-grpc-") as scratch:
            script = write_load_script(Path(scratch), bodies)
            command = [str(modelserve), "serve", "--host", "127.0.0.1", "--port", str(port)]
            url = f"http://127.0.0.1:{port}"
            floor_command = [sys.executable, "-m", "bench.grpc", "--floor", str(floor_port)]
            floor_target = f"127.0.0.1:{floor_port}"
            with (
                Server(
                    "service", command, ready_url=url + "/health/ready", log_path=Path(scratch) / "server.log", env=env
                ) as server,
                Server(
                    "gRPC floor", floor_command, ready_url=f"tcp://{floor_target}", log_path=Path(scratch) / "floor.log"
                ) as floor_server,
            ):
                target = f"127.0.0.1:{grpc_port}"
                proc, floor_proc = psutil.Process(server.pid), psutil.Process(floor_server.pid)
                measure_rest(url, script, proc, args.concurrency, 1)  # warm-up, every server
                measure_grpc(target, 1, proc, args.concurrency, 1)
                measure_grpc(floor_target, 1, floor_proc, args.concurrency, 1)
                for _ in range(args.rounds):
                    rest.append(measure_rest(url, script, proc, args.concurrency, args.duration))
                    single.append(measure_grpc(target, 1, proc, args.concurrency, args.duration))
                    batch.append(measure_grpc(target, args.batch, proc, args.concurrency, args.duration))
                    floors.append(measure_grpc(floor_target, 1, floor_proc, args.concurrency, args.duration))
        load_after = os.getloadavg()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    shadow = "shadow off" if args.no_shadow else "shadow on (the default)"
    print(f"bodies: {source}; C={args.concurrency}, {args.rounds} rounds × {args.duration} s, one worker, {shadow}")
    print(f"load average before {_load(load_before)}, after {_load(load_after)}")
    print("| load | req/s (median) | rows/s | rounds (req/s) | server CPU/call | server busy | client busy |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for name, runs, rows in (
        ("REST /predict (wrk)", rest, 1),
        ("gRPC ModelInfer, 1 row (grpc.aio)", single, 1),
        (f"gRPC ModelInfer, {args.batch} rows", batch, args.batch),
        ("gRPC floor (grpc.aio answering canned bytes)", floors, 1),
    ):
        rate = statistics.median(r.rate for r in runs)
        per_call = statistics.median(r.server_cpu / r.calls for r in runs) * 1e3
        print(
            f"| {name} | {rate:,.0f} | {rate * rows:,.0f} | {', '.join(f'{r.rate:,.0f}' for r in runs)} "
            f"| {per_call:.2f} ms | {statistics.median(r.server_busy for r in runs):.0%} "
            f"| {statistics.median(r.client_busy for r in runs):.0%} |"
        )
    # Ratios per round (each from runs taken back to back), then their median: drift hits both sides alike.
    ratio = statistics.median(g.rate / r.rate for g, r in zip(single, rest, strict=True))
    batch_ratio = statistics.median(b.rate * args.batch / g.rate for b, g in zip(batch, single, strict=True))
    print(f"gRPC 1-row req/s ÷ /predict req/s: {ratio:.2f} (target ≥ {TARGET_RPS_RATIO})")
    print(f"gRPC {args.batch}-row rows/s ÷ 1-row rows/s: {batch_ratio:.1f} (target ≥ {TARGET_BATCH_RATIO})")
    floor_ratio = statistics.median(f.rate / r.rate for f, r in zip(floors, rest, strict=True))
    print(f"gRPC floor req/s ÷ /predict req/s: {floor_ratio:.2f} (the most any grpc.aio service could reach)")
    return 0


def _load(avg: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.2f}" for x in avg)


if __name__ == "__main__":
    sys.exit(main())
