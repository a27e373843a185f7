"""Probes and metrics exposition."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from prometheus_client.exposition import choose_encoder
from starlette.responses import PlainTextResponse, Response

from app.api.deps import ContainerDep
from app.api.openapi import json_answer
from app.errors import retry_after_value

router = APIRouter(tags=["health"])


@router.get("/health/live", responses={200: json_answer("Live")})
async def live() -> Response:
    """200 while the process and its event loop run; depends on nothing external."""
    return Response(b'{"status":"live"}', media_type="application/json")


@router.get(
    "/health/ready",
    responses={200: json_answer("Ready"), 503: {"description": "Not ready (starting, failed self-check, draining)"}},
)
async def ready(container: ContainerDep) -> Response:
    """200 only once the primary model is loaded, warmed up and self-checked; 503 while draining."""
    health = container.health
    if health.is_ready:
        body = {"status": "ready", "models": container.pool.aliases()}
        return Response(orjson.dumps(body), media_type="application/json")
    body = {"error": f"not ready: {health.reason}", "detail": [], "status": health.reason}
    headers = {"Retry-After": retry_after_value(health.retry_after)}
    return Response(orjson.dumps(body), status_code=503, media_type="application/json", headers=headers)


@router.get("/metrics", response_class=PlainTextResponse)  # documents the text exposition format
async def metrics(request: Request, container: ContainerDep) -> Response:
    """Prometheus text exposition; OpenMetrics (with trace-id exemplars) when Accept asks for it."""
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(container.metrics.exposition_registry()), headers={"Content-Type": content_type})
