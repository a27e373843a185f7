"""Real processes for tests, the soak and the benchmarks: started, awaited, logged, stopped.

    with ManagedProcess("upstream", [sys.executable, "-m", "soak.upstream", ...],
                        log_path=root / "upstream.log", ready=http_ok(url)) as proc:
        ...

``ManagedProcess`` is the one spawn/poll/stop loop; ``RedisServer`` and
``ServerProcess`` (``modelserve serve``) are the processes more than one of
tests, soak and bench start. Readiness checks live in ``harness.ready``.
"""

from harness.ports import free_port, port_open
from harness.process import ManagedProcess, NotReady, ProcessExited
from harness.ready import http_ok, log_line, tcp_open
from harness.redis import RedisServer
from harness.service import MODELSERVE, ServerProcess

__all__ = [
    "MODELSERVE",
    "ManagedProcess",
    "NotReady",
    "ProcessExited",
    "RedisServer",
    "ServerProcess",
    "free_port",
    "http_ok",
    "log_line",
    "port_open",
    "tcp_open",
]
