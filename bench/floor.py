"""The floor: the cheapest FastAPI app that does what ``/predict`` must at least do.

It reads a JSON body and answers a small JSON, on the same server stack the
service uses (uvicorn, uvloop, httptools, one worker, no access log). Nothing
built on FastAPI can be faster on this machine, so the service's figures are
quoted as ratios against it.

    python -m bench.floor --port 8001 [--path /predict]
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, Request


def create_app(path: str = "/predict") -> FastAPI:
    app = FastAPI()

    @app.post(path)
    async def echo(request: Request) -> dict[str, object]:
        body = await request.json()
        return {"ok": True, "fields": len(body)}

    @app.get("/health/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/predict", help="path of the POST endpoint")
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(args.path),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
