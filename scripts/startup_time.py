"""Seconds from process start to ``/health/ready`` of ``modelserve serve``.

    python scripts/startup_time.py [--bin VENV/bin] [--runs 5] [-- EXTRA ENV=VALUE ...]

Starts the ``modelserve`` of ``--bin`` (default: this interpreter's) with the
current environment (MODELSERVE_MODELS_DIR, MODELSERVE_FEATURE_TABLE or
MODELSERVE_UPSTREAM_URL say what it serves) on a free port, polls readiness
every 10 ms, stops it with SIGTERM, and prints each run and the median.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def start_to_ready(modelserve: Path, env: dict[str, str], timeout: float = 60) -> float:
    port = free_port()
    env = {**env, "MODELSERVE_PORT": str(port), "MODELSERVE_HOST": "127.0.0.1"}
    started = time.perf_counter()
    proc = subprocess.Popen([str(modelserve), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not ready(port):
            if proc.poll() is not None:
                sys.exit(f"modelserve exited {proc.returncode}: {proc.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
            if time.perf_counter() - started > timeout:
                sys.exit("not ready in time")
            time.sleep(0.01)
        return time.perf_counter() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", type=Path, default=Path(sys.executable).parent, help="the venv's bin directory")
    parser.add_argument("--runs", type=int, default=5)
    args, extra = parser.parse_known_args()
    env = dict(os.environ)
    env.update(pair.split("=", 1) for pair in extra if "=" in pair)
    times = [start_to_ready(args.bin / "modelserve", env) for _ in range(args.runs)]
    for t in times:
        print(f"start to ready: {t:.3f} s")
    print(f"median of {len(times)}: {statistics.median(times):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
