"""Seconds from process start to ``/health/ready`` of ``modelserve serve``.

    python scripts/startup_time.py [--bin VENV/bin] [--runs 5] [-- EXTRA ENV=VALUE ...]

Starts the ``modelserve`` of ``--bin`` (default: this interpreter's) with the
current environment (MODELSERVE_MODELS_DIR, MODELSERVE_FEATURE_TABLE or
MODELSERVE_UPSTREAM_URL say what it serves) on a free port, polls readiness
every 10 ms, stops it with SIGTERM, and prints each run and the median, with
the CPU time the process had used by then (a figure a busy machine does not
inflate the way it inflates the wall time).
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its waited-for children (the table reader), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def start_to_ready(modelserve: Path, env: dict[str, str], timeout: float = 60) -> tuple[float, float]:
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
        return time.perf_counter() - started, cpu_seconds(proc.pid)
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
    runs = [start_to_ready(args.bin / "modelserve", env) for _ in range(args.runs)]
    for wall, cpu in runs:
        print(f"start to ready: {wall:.3f} s ({cpu:.2f} s CPU)")
    median_wall = statistics.median(w for w, _ in runs)
    median_cpu = statistics.median(c for _, c in runs)
    print(f"median of {len(runs)}: {median_wall:.3f} s ({median_cpu:.2f} s CPU; load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
