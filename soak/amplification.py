"""Measure error amplification: ``python -m soak.amplification [--workspace DIR]``.

Sends the issue's three hostile requests, one at a time, to a real
``modelserve serve`` and prints, for each, the answer's status and size, how
long it took, the server's peak RSS growth while it was handled (sampled every
10 ms) and the slowest ``/health/live`` meanwhile (probes every 50 ms on
fresh connections). RELIABILITY.md's "Error amplification" table comes from it.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from harness import ServerProcess
from soak.hostile import invalid_batch, with_unknown
from soak.run import trained_workspace


@dataclass
class Measured:
    case: str
    sent: int
    """Body bytes (the 60,000-character name is in the path, not counted)."""
    status: int
    answer: int
    seconds: float
    rss_growth: int
    slowest_probe: float
    rss_left: int
    """RSS one second after the answer, against before the request."""


def measure(server: ServerProcess, case: str, method: str, path: str, body: bytes | None) -> Measured:
    stop = threading.Event()
    peak = [server.rss_bytes()]
    start = peak[0]
    probes: list[float] = []

    def sample_rss() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], server.rss_bytes())
            time.sleep(0.01)

    def probe() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            httpx.get(server.url + "/health/live", timeout=30, trust_env=False)
            probes.append(time.monotonic() - t0)
            time.sleep(0.05)

    threads = [threading.Thread(target=sample_rss), threading.Thread(target=probe)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    r = httpx.request(
        method,
        server.url + path,
        content=body,
        headers={"content-type": "application/json"},
        timeout=120,
        trust_env=False,
    )
    took = time.monotonic() - t0
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    time.sleep(0.8)
    left = server.rss_bytes() - start
    return Measured(case, len(body or b""), r.status_code, len(r.content), took, peak[0] - start, max(probes), left)


def run(root: Path) -> list[Measured]:
    sample: dict[str, Any] = json.loads((root / "models" / "v2" / "manifest.json").read_text())["sample"]["request"]
    env = {
        "MODELSERVE_MODELS_DIR": str(root / "models"),
        "MODELSERVE_FEATURE_TABLE": str(root / "data" / "features.parquet"),
    }
    server = ServerProcess(env, root / "amplification-server.log")
    try:
        server.wait_ready(120)
        return [
            measure(server, "/predict, valid (for comparison)", "POST", "/predict", orjson.dumps(sample)),
            measure(
                server,
                "/predict, 6,000 unknown names in features",
                "POST",
                "/predict",
                orjson.dumps(with_unknown(sample, 6000, width=4)),
            ),
            measure(
                server,
                "/predict/batch, 1,000 instances x 650 unknown names",
                "POST",
                "/predict/batch",
                invalid_batch(sample, 650, 1000),
            ),
            measure(
                server, "V2 infer, 60,000-character model name", "POST", "/v2/models/" + "m" * 60_000 + "/infer", b"{}"
            ),
        ]
    finally:
        server.stop()


def table(rows: list[Measured]) -> str:
    lines = [
        "| request | body sent | answer | took | server RSS growth: peak / 1 s after | slowest /health/live |",
        "|---|---|---|---|---|---|",
    ]
    for m in rows:
        lines.append(
            f"| {m.case} | {m.sent:,} bytes | {m.status}, {m.answer:,} bytes | {m.seconds:.2f} s "
            f"| {m.rss_growth / 2**20:+.1f} / {m.rss_left / 2**20:+.1f} MiB | {m.slowest_probe * 1000:.0f} ms |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m soak.amplification", description=__doc__.splitlines()[0])
    p.add_argument("--workspace", type=Path, help="a trained workspace (models/, data/)")
    args = p.parse_args(argv)
    with trained_workspace(args.workspace) as root:
        print(table(run(root)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
