"""Load from ``wrk``: one thread pinned to ``LOAD_CPU``, JSON bodies POSTed in rotation.

The Lua script's ``done()`` hook prints one machine-readable line (after a
marker) that ``run_wrk`` parses, so nothing depends on wrk's human output.

Percentiles are wrk's, which are corrected for coordinated omission: before
``done()`` runs, wrk 4 (``stats_correct``) adds, for every response slower than
the mean interval per connection, the samples a client sending at a steady
rate would have seen. One stall of S ms thus counts about S / interval times,
so p99 tells stalls apart loudly (and ``mean × requests`` can exceed the run's
duration). p50 barely moves; the closed-loop mean latency is C / req/s.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.machine import LOAD_CPU, BenchError

RESULT_MARKER = "BENCH_RESULT "


@dataclass(frozen=True)
class WrkResult:
    """One wrk run. Latencies in milliseconds."""

    requests: int
    duration_s: float
    non2xx: int  # responses with status > 399, as wrk counts them
    errors: int  # socket errors: connect, read, write, timeout
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


_LUA_HEAD = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies_path = {path}
"""

# One body: wrk builds the request once and reuses it (no Lua per request).
_LUA_ONE_BODY = """\
wrk.body = io.lines(bodies_path)()
"""

# Many bodies: requests are formatted once in init() and rotated per request.
_LUA_MANY_BODIES = """\
local reqs, n, i = {}, 0, 0

function init(args)
  for line in io.lines(bodies_path) do
    n = n + 1
    reqs[n] = wrk.format(nil, nil, nil, line)
  end
end

function request()
  i = i % n + 1
  return reqs[i]
end
"""

_LUA_DONE = """\
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "\\n%s{\\"requests\\": %.0f, \\"duration_us\\": %.0f, \\"status\\": %.0f, "
    .. "\\"connect\\": %.0f, \\"read\\": %.0f, \\"write\\": %.0f, \\"timeout\\": %.0f, "
    .. "\\"p50_us\\": %.0f, \\"p90_us\\": %.0f, \\"p99_us\\": %.0f}\\n",
    "{marker}", summary.requests, summary.duration, e.status,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


def write_load_script(directory: Path, bodies: Sequence[Any]) -> Path:
    """A wrk Lua script POSTing ``bodies`` (JSON values) in rotation."""
    if not bodies:
        raise BenchError("a scenario needs at least one request body")
    bodies_path = directory / "bodies.jsonl"
    with open(bodies_path, "w") as f:
        for body in bodies:
            f.write(json.dumps(body, separators=(",", ":")) + "\n")
    script = _LUA_HEAD.format(path=json.dumps(str(bodies_path)))
    script += _LUA_ONE_BODY if len(bodies) == 1 else _LUA_MANY_BODIES
    script += _LUA_DONE.replace("{marker}", RESULT_MARKER)
    script_path = directory / "load.lua"
    script_path.write_text(script)
    return script_path


def run_wrk(url: str, script: Path, connections: int, duration_s: int) -> WrkResult:
    """Load ``url`` with one wrk thread pinned to ``LOAD_CPU``."""
    command = [
        "taskset",
        "-c",
        str(LOAD_CPU),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            raw = json.loads(line.removeprefix(RESULT_MARKER))
            break
    else:
        detail = (proc.stderr or proc.stdout).strip()[-1000:]
        raise BenchError(f"wrk gave no result (exit {proc.returncode}): {detail}")
    return WrkResult(
        requests=int(raw["requests"]),
        duration_s=raw["duration_us"] / 1e6,
        non2xx=int(raw["status"]),
        errors=int(raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]),
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
    )
