"""Per-request cost of ``/predict`` in process: the ASGI app called directly, no HTTP server, no client.

    python -m bench.inprocess                          # off, 1 %, 1 % with an unsampled traceparent, 100 %
    python -m bench.inprocess --modes off,1pct --requests 4000 --rounds 5

Each mode runs in its own process pinned to ``SERVER_CPU`` (an OTLP receiver,
``bench.otlp_sink``, on ``LOAD_CPU``), and the modes alternate over rounds, so
drift hits them alike. A figure is CPU time per request (every thread of the
process: the batch span processor's export counts too, flushed inside the
timed window), median over rounds; ``Δ off`` is the median of the per-round
differences to ``off``. Wall-clock figures on a shared machine move more than
the microseconds compared here; CPU time moves less.

Modes: ``off`` (no OTEL variables), ``1pct`` / ``100pct``
(``parentbased_traceidratio`` 0.01 / 1.0, no incoming ``traceparent``),
``1pct-tp00`` (0.01, every request carrying a ``traceparent`` whose sampled
flag is off), ``100pct-tp01`` (1.0, a sampled incoming ``traceparent``).
"""

from __future__ import annotations

import argparse
import asyncio
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

MODES: dict[str, dict[str, str]] = {
    "off": {},
    "1pct": {"OTEL_TRACES_SAMPLER_ARG": "0.01"},
    "1pct-tp00": {"OTEL_TRACES_SAMPLER_ARG": "0.01", "BENCH_TRACEPARENT": "00"},
    "100pct": {"OTEL_TRACES_SAMPLER_ARG": "1.0"},
    "100pct-tp01": {"OTEL_TRACES_SAMPLER_ARG": "1.0", "BENCH_TRACEPARENT": "01"},
}


def _mode_env(mode: str, endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    extra = MODES[mode]
    if "OTEL_TRACES_SAMPLER_ARG" in extra:
        env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio"})
    env.update(extra)
    env["PYTHONPATH"] = str(ROOT)
    return env


async def _child(requests: int, warmup: int) -> dict[str, float]:
    """Inside one mode's process: start the app, time ``requests`` calls, print the figures."""
    from app.main import create_app
    from app.telemetry import tracing
    from bench.run import predict_bodies

    bodies = [json.dumps(b).encode() for b in predict_bodies(1000)[0]]
    app = create_app(warm_before_listening=True)
    started = asyncio.Event()
    stop = asyncio.Event()

    async def lifespan_receive() -> dict[str, Any]:
        if not started.is_set():
            started.set()
            return {"type": "lifespan.startup"}
        await stop.wait()
        return {"type": "lifespan.shutdown"}

    ready = asyncio.Event()

    async def lifespan_send(message: dict[str, Any]) -> None:
        if message["type"].startswith("lifespan.startup"):
            ready.set()

    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan_receive, lifespan_send)
    )
    await ready.wait()
    await app.state.startup

    flags = os.environ.get("BENCH_TRACEPARENT")
    statuses: list[int] = []

    async def call(body: bytes) -> None:
        headers = [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if flags:
            headers.append((b"traceparent", f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-{flags}".encode()))
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

    for i in range(warmup):
        await call(bodies[i % len(bodies)])
    tracing.force_flush()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(requests):
        await call(bodies[i % len(bodies)])
    tracing.force_flush()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    stop.set()
    await lifespan
    bad = sum(1 for s in statuses if s != 200)
    if bad:
        raise SystemExit(f"{bad} answers were not 200")
    return {"cpu_us": cpu / requests * 1e6, "wall_us": wall / requests * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="off,1pct,1pct-tp00,100pct")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import uvloop

        print(json.dumps(uvloop.run(_child(args.requests, args.warmup))))
        return

    modes = args.modes.split(",")
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown mode(s): {', '.join(sorted(unknown))}")
    port = free_port()
    sink = subprocess.Popen(
        ["taskset", "-c", str(LOAD_CPU), sys.executable, "-m", "bench.otlp_sink", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    figures: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    try:
        for r in range(args.rounds):
            for mode in modes if r % 2 == 0 else modes[::-1]:
                command = [
                    "taskset", "-c", str(SERVER_CPU), sys.executable, "-m", "bench.inprocess", "--child",
                    "--requests", str(args.requests), "--warmup", str(args.warmup),
                ]  # fmt: skip
                out = subprocess.run(
                    command, cwd=ROOT, env=_mode_env(mode, f"http://127.0.0.1:{port}"),
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                if out.returncode != 0:
                    raise SystemExit(f"{mode}: {out.stderr[-2000:]}")
                figures[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"round {r + 1} {mode}: {figures[mode][-1]}", file=sys.stderr, flush=True)
    finally:
        sink.terminate()
        sink.wait()
    print(f"load average {os.getloadavg()[0]:.2f}; {args.requests} requests × {args.rounds} rounds\n")
    print("| mode | CPU µs/request | Δ off | wall µs/request |")
    print("|:--|--:|--:|--:|")
    for mode in modes:
        cpu = statistics.median(f["cpu_us"] for f in figures[mode])
        wall = statistics.median(f["wall_us"] for f in figures[mode])
        delta = ""
        if "off" in figures and mode != "off":
            d = statistics.median(f["cpu_us"] - o["cpu_us"] for f, o in zip(figures[mode], figures["off"], strict=True))
            delta = f"{d:+.1f}"
        print(f"| {mode} | {cpu:.1f} | {delta} | {wall:.1f} |")


if __name__ == "__main__":
    main()
