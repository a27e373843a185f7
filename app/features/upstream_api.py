"""A small upstream feature API backed by the offline table, for demos and tests.

    python -m app.features.upstream_api --port 9100 --table data/features.parquet

``GET /users/{user_id}/features`` → ``{"user_id": ..., "features": {...}}``,
404 for a user the table does not have. Point the service at it with
``MODELSERVE_UPSTREAM_URL=http://127.0.0.1:9100``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import orjson
from fastapi import FastAPI
from starlette.responses import Response

from app.features.table import OfflineTable


def create_upstream_app(table: OfflineTable) -> FastAPI:
    app = FastAPI(title="modelserve upstream feature API", docs_url=None, redoc_url=None)

    @app.get("/users/{user_id}/features")
    async def user_features(user_id: str) -> Response:
        features = table.rows.get(user_id)
        if features is None:
            body = {"error": f"unknown user {user_id!r}", "detail": []}
            return Response(orjson.dumps(body), status_code=404, media_type="application/json")
        return Response(orjson.dumps({"user_id": user_id, "features": features}), media_type="application/json")

    @app.get("/health")
    async def health() -> dict[str, int]:
        return {"users": len(table)}

    return app


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m app.features.upstream_api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--table", type=Path, default=Path("data/features.parquet"))
    args = parser.parse_args(argv)
    try:
        table = OfflineTable.load(args.table)
    except Exception as exc:
        parser.exit(1, f"error: {exc}\n")
    uvicorn.run(create_upstream_app(table), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
