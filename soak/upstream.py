"""The upstream feature API with switchable faults, run as its own process.

    python -m soak.upstream --port 9100 --table data/features.parquet

Wraps the service's own demo upstream (``app.features.upstream_api``) so the
answers are real; ``POST /_soak/fault`` with ``{"mode": "ok" | "429" | "500"
| "slow", "delay": seconds}`` switches how feature requests are answered, and
``GET /_soak/stats`` counts what was answered in each mode.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from app.features.table import OfflineTable
from app.features.upstream_api import create_upstream_app


class FaultInjector:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.mode = "ok"
        self.delay = 0.5
        self.stats: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/_soak/fault":
            body = b""
            while True:
                msg = await receive()
                body += msg.get("body", b"")
                if not msg.get("more_body"):
                    break
            cfg = orjson.loads(body)
            self.mode, self.delay = cfg["mode"], float(cfg.get("delay", self.delay))
            await _json(send, 200, {"mode": self.mode})
            return
        if path == "/_soak/stats":
            await _json(send, 200, dict(self.stats))
            return
        self.stats[self.mode] += 1
        if self.mode == "429":
            await _json(send, 429, {"error": "slow down"}, [(b"retry-after", b"1")])
        elif self.mode == "500":
            await _json(send, 500, {"error": "upstream broke"})
        else:
            if self.mode == "slow":
                await asyncio.sleep(self.delay)
            await self.app(scope, receive, send)


async def _json(send: Send, status: int, body: Any, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", b"application/json"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": orjson.dumps(body)})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--table", type=Path, required=True)
    args = p.parse_args()
    app = FaultInjector(create_upstream_app(OfflineTable.load(args.table)))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
