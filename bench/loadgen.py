"""Open- and closed-loop HTTP/1.1 load that keeps answered and refused requests apart.

    python -m bench.loadgen URL --bodies FILE --rate 9000 --duration 10      # open loop
    python -m bench.loadgen URL --bodies FILE --connections 512 --duration 10 --closed

wrk is closed loop: each connection waits for its answer before it sends the
next request, so a slow server is sent less and its queue never grows beyond
the connections. An overloaded service meets an *open* loop (clients arrive
whatever it does), and its figures of merit are per answer class: how many
were answered 2xx (goodput), how many refused (503), how fast each came back.

The generator is ``bench/openloop.c`` (why C: see its header), compiled on
first use with the machine's ``cc`` into ``build/bench/`` (git-ignored) and
again whenever the source is newer. Open loop: request ``i`` is due at
``start + i / rate`` and goes out on an idle keep-alive connection or a new
one (at most ``--connections``), else waits its turn; its latency is counted
from when it was due (no coordinated omission). Closed loop: each connection
resends as soon as it is answered. Bounded in requests (``rate × duration``),
connections, and time (``--timeout`` per request, ``--drain`` after the last
one was due). Loopback only. Prints one JSON object (``LoadResult``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "bench" / "openloop.c"
BINARY = ROOT / "build" / "bench" / "openloop"
MAX_CONNECTIONS = 4096
LOOPBACK = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1"}


@dataclass
class LoadResult:
    mode: str
    target_rate: float
    duration_s: float
    """From the start to the last answer (at least the run's duration): rates are counts over it."""
    sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    socket_errors: int = 0
    """Connections refused, reset or closed mid-answer, and answers that could not be parsed."""
    socket_error_kinds: dict[str, int] = field(default_factory=dict)
    """``socket_errors`` by kind (``bench/openloop.c``'s ``error_names``), e.g. ``reused_closed``."""
    timed_out: int = 0
    """Sent and never answered (within ``--timeout``, or by the end of the drain)."""
    unsent: int = 0
    """Open loop: due, but no connection came free before the end of the drain."""
    late_sends: int = 0
    """Open loop: requests that went out more than 10 ms after they were due (no free connection)."""
    idle_timeouts: int = 0
    """Connections the server timed out (a 408, then closed) while no request was out on them: not errors."""
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per answer class (``ok`` for 2xx, ``shed`` for 503, ``other``): p50, p90, p99, max, n."""

    def count(self, status_class: str) -> int:
        return sum(n for s, n in self.statuses.items() if klass(int(s)) == status_class)

    def rate(self, status_class: str) -> float:
        return self.count(status_class) / self.duration_s if self.duration_s > 0 else 0.0


def klass(status: int) -> str:
    if 200 <= status < 300:
        return "ok"
    return "shed" if status == 503 else "other"


def build() -> Path:
    """The generator's binary, compiled from ``bench/openloop.c`` if missing or older than the source."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc) on PATH to build bench/openloop.c")
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=BINARY.parent, prefix=".openloop-")
    os.close(fd)
    try:
        proc = subprocess.run([cc, "-O2", "-Wall", "-o", tmp, str(SOURCE)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE} failed: {proc.stderr.strip()[-2000:]}")
        os.replace(tmp, BINARY)  # atomic: a concurrent build never runs a half-written binary
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return BINARY


def command(
    url: str,
    bodies_file: Path,
    *,
    rate: float = 0.0,
    duration: float = 10.0,
    connections: int = 1024,
    closed: bool = False,
    warm: int | None = None,
    timeout: float = 5.0,
    drain: float = 5.0,
) -> list[str]:
    """The generator's command line for these options (checked here, so mistakes read as Python errors)."""
    parts = urlsplit(url)
    host = LOOPBACK.get(parts.hostname or "")
    if parts.scheme != "http" or host is None or parts.port is None:
        raise ValueError(f"loopback http://127.0.0.1:PORT/... targets only, not {url!r}")
    if not 1 <= connections <= MAX_CONNECTIONS:
        raise ValueError(f"connections must be 1..{MAX_CONNECTIONS}")
    if not closed and rate <= 0:
        raise ValueError("open loop needs a rate")
    argv = [str(build()), "--host", host, "--port", str(parts.port), "--path", parts.path or "/"]
    argv += ["--bodies", str(bodies_file), "--duration", str(duration), "--connections", str(connections)]
    argv += ["--timeout", str(timeout), "--drain", str(drain)]
    argv += ["--closed"] if closed else ["--rate", str(rate)]
    if warm is not None:
        argv += ["--warm", str(warm)]
    return argv


def run(url: str, bodies_file: Path, *, prefix: Sequence[str] = (), **options: object) -> LoadResult:
    """One run of the generator (``prefix``: e.g. ``taskset -c 1``); see the module docstring for ``options``."""
    argv = [*prefix, *command(url, bodies_file, **options)]  # type: ignore[arg-type]
    limit = float(options.get("duration", 10.0)) + float(options.get("drain", 5.0)) + 30  # type: ignore[arg-type]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=limit, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"load generator failed (exit {proc.returncode}): {proc.stderr.strip()[-1000:]}")
    return LoadResult(**json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--bodies", required=True, type=Path, help="file of JSON bodies, one a line")
    parser.add_argument("--rate", type=float, default=0.0, help="requests per second (open loop)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=1024)
    parser.add_argument("--closed", action="store_true", help="closed loop over --connections")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds a request may stay unanswered")
    parser.add_argument("--drain", type=float, default=5.0)
    args = parser.parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in ("url", "bodies")}
    try:
        result = run(args.url, args.bodies, **options)
    except (ValueError, RuntimeError) as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
