"""Per-request cost of ``/predict`` in process: the ASGI app called directly, no HTTP server, no client.

    python -m bench.tracecost                          # tracing off, then on at 1 % and 100 %
    python -m bench.tracecost --requests 4000 --rounds 5 --block 200

Measures what tracing adds to a request, in microseconds, more steadily than
a req/s ratio can on a shared machine. Each sampling ratio runs in its own
process (``parentbased_traceidratio``, exporting to a ``bench.otlp_sink`` on
``LOAD_CPU``), pinned to ``SERVER_CPU``; inside it the request kinds take
turns in blocks of ``--block`` requests (the order rotating, a full collection
before each block), so drift hits them alike:

- ``off``: tracing switched off for the block (``tracing.enabled`` false: what
  a service without ``OTEL_EXPORTER_OTLP_ENDPOINT`` runs);
- ``root``: no incoming ``traceparent`` (the ratio decides);
- ``tp00``: an incoming ``traceparent`` the caller did not sample;
- ``tp01``: an incoming sampled ``traceparent`` (always sampled: every span made and exported).

A figure is the process's CPU time per request over a kind's blocks (every
thread: the batch span processor exports on its own schedule, as in the
service, when 512 spans are queued, so a POST lands in the block that filled
the batch; flushing after every block would charge one POST to each block
that made a single span), median over rounds; ``Δ off`` is the median of the
per-round differences to ``off`` in the same process.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.machine import LOAD_CPU, ROOT, SERVER_CPU
from harness import free_port

KINDS = ("off", "root", "tp00", "tp01")


async def _child(requests: int, warmup: int, block: int, kinds: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Inside one ratio's process: start the app, time each kind's blocks in turn, return CPU and wall µs."""
    from app.main import create_app
    from app.telemetry import tracing
    from bench.run import predict_bodies

    bodies = [json.dumps(b).encode() for b in predict_bodies(1000)[0]]
    app = create_app(warm_before_listening=True)
    stop = asyncio.Event()
    ready = asyncio.Event()
    started = False

    async def lifespan_receive() -> dict[str, Any]:
        nonlocal started
        if not started:
            started = True
            return {"type": "lifespan.startup"}
        await stop.wait()
        return {"type": "lifespan.shutdown"}

    async def lifespan_send(message: dict[str, Any]) -> None:
        if message["type"].startswith("lifespan.startup"):
            ready.set()

    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan_receive, lifespan_send)
    )
    await ready.wait()
    await app.state.startup
    assert tracing.enabled, "tracing did not start: is OTEL_EXPORTER_OTLP_ENDPOINT set?"
    statuses: list[int] = []

    async def call(body: bytes, traceparent: bytes | None) -> None:
        headers = [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if traceparent is not None:
            headers.append((b"traceparent", traceparent))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/predict",
            "raw_path": b"/predict",
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8000),
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)

    flags = {"off": None, "root": None, "tp00": "00", "tp01": "01"}
    cpu = dict.fromkeys(kinds, 0.0)
    wall = dict.fromkeys(kinds, 0.0)
    n = 0
    for i in range(warmup):
        await call(bodies[i % len(bodies)], None)
    tracing.force_flush()
    while n < requests:
        turn = n // block % len(kinds)
        for kind in kinds[turn:] + kinds[:turn]:  # each kind follows each other in turn
            tracing.enabled = kind != "off"
            f = flags[kind]  # fresh trace ids, drawn before the clock starts
            parents = [
                f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-{f}".encode() if f else None for _ in range(block)
            ]
            gc.collect()  # the garbage of the block before is not this one's
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for i in range(block):
                await call(bodies[(n + i) % len(bodies)], parents[i])
            cpu[kind] += time.process_time() - cpu0
            wall[kind] += time.perf_counter() - wall0
        n += block
    tracing.enabled = True
    stop.set()
    await lifespan
    bad = sum(1 for s in statuses if s != 200)
    if bad:
        raise SystemExit(f"{bad} answers were not 200")
    return {k: {"cpu_us": cpu[k] / n * 1e6, "wall_us": wall[k] / n * 1e6} for k in kinds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", default="0.01,1.0", help="OTEL_TRACES_SAMPLER_ARG of each process")
    parser.add_argument("--requests", type=int, default=3000, help="per kind and round")
    parser.add_argument("--block", type=int, default=250)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kinds", default=",".join(KINDS), help="in a --child: only these (e.g. to profile one)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import uvloop

        print(json.dumps(uvloop.run(_child(args.requests, args.warmup, args.block, tuple(args.kinds.split(","))))))
        return

    port = free_port()
    sink = subprocess.Popen(
        ["taskset", "-c", str(LOAD_CPU), sys.executable, "-m", "bench.otlp_sink", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    ratios = args.ratios.split(",")
    figures: dict[str, list[dict[str, dict[str, float]]]] = {r: [] for r in ratios}
    try:
        for r in range(args.rounds):
            for ratio in ratios:
                env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
                env.update(
                    PYTHONPATH=str(ROOT),
                    OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
                    OTEL_TRACES_SAMPLER="parentbased_traceidratio",
                    OTEL_TRACES_SAMPLER_ARG=ratio,
                )
                command = [
                    "taskset", "-c", str(SERVER_CPU), sys.executable, "-m", "bench.tracecost", "--child",
                    "--requests", str(args.requests), "--warmup", str(args.warmup), "--block", str(args.block),
                ]  # fmt: skip
                out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    raise SystemExit(f"ratio {ratio}: {out.stderr[-2000:]}")
                figures[ratio].append(json.loads(out.stdout.strip().splitlines()[-1]))
                line = {k: round(v["cpu_us"], 1) for k, v in figures[ratio][-1].items()}
                print(f"round {r + 1} ratio {ratio}: CPU µs {line}", file=sys.stderr, flush=True)
    finally:
        sink.terminate()
        sink.wait()
    print(f"load average {os.getloadavg()[0]:.2f}; {args.requests} requests a kind × {args.rounds} rounds\n")
    print("| ratio | kind | CPU µs/request | Δ off | wall µs/request |")
    print("|--:|:--|--:|--:|--:|")
    for ratio in ratios:
        rounds = figures[ratio]
        for kind in KINDS:
            cpu = statistics.median(f[kind]["cpu_us"] for f in rounds)
            wall = statistics.median(f[kind]["wall_us"] for f in rounds)
            delta = (
                ""
                if kind == "off"
                else f"{statistics.median(f[kind]['cpu_us'] - f['off']['cpu_us'] for f in rounds):+.1f}"
            )
            print(f"| {ratio} | {kind} | {cpu:.1f} | {delta} | {wall:.1f} |")


if __name__ == "__main__":
    main()
