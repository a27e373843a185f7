"""Admin API: ``GET /admin/models`` and ``POST /admin/reload``.

Both need ``Authorization: Bearer $MODELSERVE_ADMIN_TOKEN``, compared in
constant time. Without a configured token the endpoints do not exist (404,
the same answer as any unknown path); a missing or wrong token is 401 with the
usual error shape. The token is never echoed, logged or put in an error.

``POST /admin/reload`` re-reads the alias links and the flags file at once
(what polling does every few seconds), loading and verifying any new version
before it serves. 200 with the resulting state when every named version is
loaded; 409 when one was refused (the old one keeps serving), each refusal in
``detail``; 503 with ``Retry-After`` until start-up has finished.
"""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from app.api.deps import HealthDep, RolloutDep, SettingsDep
from app.api.openapi import json_answer
from app.errors import ArtifactError, NotFound, NotReady, Unauthorized


async def require_admin(request: Request, settings: SettingsDep) -> None:
    token = settings.admin_token
    if not token:
        raise NotFound("Not Found")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    ok = scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    if not ok:
        raise Unauthorized("missing or invalid bearer token")


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid bearer token"},
    404: {"description": "Admin API disabled (no MODELSERVE_ADMIN_TOKEN)"},
}


@router.get("/models", responses={200: json_answer("AdminModels"), **AUTH_ERRORS})
async def models(rollout: RolloutDep) -> Response:
    """Aliases and the versions they serve, flags, the shadow's state and recent load errors."""
    return Response(orjson.dumps(rollout.describe()), media_type="application/json")


@router.post(
    "/reload",
    responses={
        200: json_answer("ReloadResult"),
        **AUTH_ERRORS,
        409: {"description": "A named version was refused"},
        503: {"description": "Start-up has not finished"},
    },
)
async def reload(rollout: RolloutDep, health: HealthDep) -> Response:
    """Follow alias and flags changes now; a version that fails to load leaves the old one serving."""
    if not health.ready:
        raise NotReady("not ready: start-up has not finished", retry_after=health.retry_after)
    result = await rollout.reload()
    if result.errors:
        detail = [{"loc": ["models", e["target"]], "msg": e["error"], "type": "version_refused"} for e in result.errors]
        raise ArtifactError(f"{len(result.errors)} version(s) refused; the previous ones keep serving", detail)
    body = {"changed": result.changed, **rollout.describe()}
    return Response(orjson.dumps(body), media_type="application/json")
