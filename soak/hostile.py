"""Hostile clients on plain sockets: half-open connections, huge headers, clients that never read.

Blocking and bounded (counts, sizes and timeouts are the caller's); the soak
runs them in threads next to its valid load, ``soak.amplification`` alone.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

import orjson

from harness import hostile


def send_huge_header(port: int, size: int, timeout: float = 30) -> tuple[int, float]:
    """A request with one header value of ``size`` bytes: (the answer's status or 0, seconds until answered)."""
    answer, took = hostile.send_huge_header(port, size, timeout)
    return status_of(answer), took


def with_unknown(instance: dict[str, Any], n: int, width: int = 1) -> dict[str, Any]:
    """``instance`` with ``n`` unknown feature names added (each at least ``width`` characters)."""
    extra = {f"k{i:0{width}d}": 0 for i in range(n)}
    return {**instance, "features": {**instance["features"], **extra}}


def invalid_batch(instance: dict[str, Any], unknown: int, instances: int) -> bytes:
    """A /predict/batch body of ``instances`` copies of ``instance``, each with ``unknown`` unknown names (a 422)."""
    return orjson.dumps({"instances": [with_unknown(instance, unknown, width=6)] * instances})


def request_bytes(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def post_unread(port: int, path: str, body: bytes, timeout: float = 30) -> socket.socket:
    """Send a whole POST and return its socket unread: a client that never reads its answer."""
    s = socket.socket()
    # A small receive buffer (set before connecting, so the window is small too): a large answer would wait on it.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    s.sendall(request_bytes(path, body))
    return s


def read_all(s: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Everything the server sends within ``timeout``, and whether it closed the connection by then."""
    s.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                return data, True
            data += chunk
    except ConnectionResetError:
        return data, True
    except (TimeoutError, OSError):
        pass
    return data, False


def read_answer(s: socket.socket, timeout: float) -> bytes:
    """One whole HTTP answer (headers and a Content-Length body), or what arrived within ``timeout``."""
    s.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(OSError):
        while time.monotonic() < deadline:
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                if len(body) >= length:
                    break
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def status_of(answer: bytes) -> int:
    """The status code of an HTTP/1.1 answer's first line, or 0."""
    parts = answer.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return 0


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()
