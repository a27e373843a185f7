"""``harness.RedisServer`` for tests: skips the test when redis-server is not installed.

with RedisServer(tmp_path) as redis:
    settings = ws.settings(redis_url=redis.url)
    redis.freeze(); redis.thaw(); redis.kill(); redis.restart()
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness import RedisServer as _RedisServer


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        pytest.skip("redis-server is not installed (make system-deps)")
    return path


class RedisServer(_RedisServer):
    def __init__(self, workdir: Path, port: int | None = None, *, password: str | None = None) -> None:
        super().__init__(workdir, port, password=password, binary=redis_binary())
