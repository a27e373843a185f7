"""Hostile clients on plain sockets, shared by the reliability tests and the soak.

Blocking and bounded: counts, sizes and timeouts are the caller's, and every
connection goes to the loopback address.
"""

from __future__ import annotations

import contextlib
import socket
import time

HALF_OPEN = b"GET /health/live HTTP/1.1\r\nHost: x\r\n"
"""A request whose headers never end: the blank line after them never comes."""


def open_half(port: int, n: int) -> list[socket.socket]:
    """Up to ``n`` connections that each send an unfinished request; stops early when connects keep failing."""
    socks: list[socket.socket] = []
    failures = 0
    while len(socks) < n and failures < 20:
        s = socket.socket()
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(HALF_OPEN)
        except OSError:
            s.close()
            failures += 1
            continue
        socks.append(s)
    return socks


def send_huge_header(port: int, size: int, timeout: float = 30) -> tuple[bytes, float]:
    """A request with one header value of ``size`` bytes: (the answer's first bytes, seconds until answered)."""
    head = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: "
    chunk = b"a" * 65536
    t0 = time.monotonic()
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(head)
            for _ in range(size // len(chunk)):
                s.sendall(chunk)
            s.sendall(b"\r\n\r\n")
        except OSError:
            pass  # the server answered and stopped reading: what follows is the answer
        with contextlib.suppress(OSError):
            answer = s.recv(200)
    return answer, time.monotonic() - t0
