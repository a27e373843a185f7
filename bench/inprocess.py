"""CPU per request of /predict and one-row V2 infer, in process: the app called as ASGI, no sockets.

    python -m bench.inprocess                          # 5 rounds × 5,000 requests each, shadow on
    python -m bench.inprocess --no-shadow --rounds 3
    python -m bench.inprocess --batch 100 --log /tmp/log --requests 1000   # /predict against /predict/batch

The app is built by ``create_app`` with its default settings (shadow on, no
prediction log) and the models of ``MODELSERVE_MODELS_DIR``, and called with
one request at a time, the two paths alternating round by round. Each round
reports the event loop thread's CPU time per request (``time.thread_time``:
the shadow's and the log's threads are not in it, nor is time the process
spent descheduled), and the best round of each path is printed last: on a
shared machine that is the steadiest figure to compare two versions of the
code with (run it once per version). What it leaves out is the server's own
share (HTTP parsing, the socket), which ``python -m bench.run`` measures.

``--batch N`` compares /predict with /predict/batch of ``N`` rows instead of
V2, and ``--log DIR`` turns the prediction log on (as ``make run`` serves).
A batch's shadow run and log lines are written by worker threads, so for it
the process's CPU time (every thread; pin the process to one core with
``taskset -c 0`` so that it is all on one core) is reported too, per request
and per row, each round ending when the shadow and the log have caught up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import orjson

from bench.batch import batch_bodies
from bench.run import FEATURE_TABLE, MANIFEST, MODELS_DIR, predict_bodies
from bench.v2 import V2_PATH, v2_body

PREDICT = "/predict"
BATCH = "/predict/batch"


def scope(path: str, body: bytes) -> dict[str, Any]:
    headers = [(b"host", b"bench"), (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "state": {},
    }


async def call(app: Any, path: str, body: bytes) -> int:
    """One request through the whole app; its status."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)  # the client never goes away
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope(path, body), receive, send)
    return status


async def measure(
    rounds: int, requests: int, shadow: bool, batch: int = 0, log_dir: str | None = None
) -> dict[str, float]:
    from app.main import create_app
    from app.settings import Settings

    bodies, _ = predict_bodies(200)
    manifest = json.loads(MANIFEST.read_text())
    plans = {PREDICT: [orjson.dumps(b) for b in bodies]}
    if batch:
        plans[BATCH] = [orjson.dumps(b) for b in batch_bodies(bodies, batch)]
    else:
        plans[V2_PATH] = [orjson.dumps(v2_body(manifest, b)) for b in bodies]
    settings = Settings(
        models_dir=MODELS_DIR,
        feature_table=FEATURE_TABLE,
        max_queue_ms=60_000,
        shadow_enabled=shadow,
        log_dir=log_dir,
    )
    app = create_app(settings)
    best: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    async with app.router.lifespan_context(app):
        await app.state.startup
        container = app.state.container
        for _ in range(rounds):
            for path, payloads in plans.items():
                n = max(requests // batch, 50) if path == BATCH else requests
                for i in range(min(500, n)):  # warm-up
                    await loop.create_task(call(app, path, payloads[i % len(payloads)]))
                await caught_up(container)
                started, cpu = time.thread_time(), time.process_time()
                for i in range(n):
                    # Each request in its own task, as the server runs it.
                    status = await loop.create_task(call(app, path, payloads[i % len(payloads)]))
                    if status != 200:
                        raise SystemExit(f"{path} answered {status}")
                us = (time.thread_time() - started) / n * 1e6
                await caught_up(container)
                total = (time.process_time() - cpu) / n * 1e6
                key = f"{path} (process)"
                best[path] = min(best.get(path, us), us)
                best[key] = min(best.get(key, total), total)
                rows = batch if path == BATCH else 1
                print(
                    f"{path:32s} {us:7.1f} µs of loop CPU per request, {total:7.1f} µs of process CPU"
                    f" ({total / rows:5.1f} µs a row)"
                )
    return best


async def caught_up(container: Any) -> None:
    """Wait until the shadow has run and the prediction log has written what the requests queued."""
    await container.rollout.shadow.idle(30)
    log = container.prediction_log
    while log is not None and log.pending:
        log._wake.set()
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.02)  # the writer's last batch, after it emptied the queue


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--no-shadow", action="store_true")
    parser.add_argument("--batch", type=int, default=0, help="compare with /predict/batch of this many rows")
    parser.add_argument("--log", default=None, help="prediction log directory (off unless given)")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    best = asyncio.run(measure(args.rounds, args.requests, not args.no_shadow, args.batch, args.log))
    if args.batch:
        single, batch = best[f"{PREDICT} (process)"], best[f"{BATCH} (process)"]
        print(
            f"best process CPU: /predict {single:.1f} µs, /predict/batch {batch:.1f} µs"
            f" ({batch / args.batch:.1f} µs a row; rows/s ratio {single * args.batch / batch:.1f} ×)"
        )
        return
    ratio = best[PREDICT] / best[V2_PATH]
    print(f"best: /predict {best[PREDICT]:.1f} µs, V2 {best[V2_PATH]:.1f} µs (V2 req/s ÷ /predict's: {ratio:.2f})")


if __name__ == "__main__":
    main()
