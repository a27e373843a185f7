"""Admin API: ``GET /admin/models`` and ``POST /admin/reload``.

Both need ``Authorization: Bearer $MODELSERVE_ADMIN_TOKEN``, compared in
constant time. Without a configured token the endpoints do not exist (404,
the same answer as any unknown path); a missing or wrong token is 401 with the
usual error shape. The token is never echoed, logged or put in an error.

``POST /admin/reload`` re-reads the alias links and the flags file at once
(what polling does every few seconds), loading and verifying any new version
before it serves. 200 with the resulting state when every named version is
loaded; 409 when one was refused (the old one keeps serving), each refusal in
``detail``.
"""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response

from app.api.deps import ContainerDep
from app.api.errors import error_response
from app.rollout.service import Rollout


async def require_admin(request: Request) -> None:
    token = request.app.state.container.settings.admin_token
    if not token:
        raise HTTPException(404, "Not Found")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    ok = scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    if not ok:
        raise HTTPException(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid bearer token"},
    404: {"description": "Admin API disabled (no MODELSERVE_ADMIN_TOKEN)"},
}


def _rollout(container: Any) -> Rollout:
    rollout = container.rollout
    if rollout is None:
        raise HTTPException(404, "Not Found")
    return rollout


@router.get("/models", responses=AUTH_ERRORS)
async def models(container: ContainerDep) -> Response:
    """Aliases and the versions they serve, flags, the shadow's state and recent load errors."""
    return Response(orjson.dumps(_rollout(container).describe()), media_type="application/json")


@router.post("/reload", responses={**AUTH_ERRORS, 409: {"description": "A named version was refused"}})
async def reload(container: ContainerDep) -> Response:
    """Follow alias and flags changes now; a version that fails to load leaves the old one serving."""
    if not container.health.ready:
        return error_response(503, "not ready: start-up has not finished", headers={"Retry-After": "1"})
    rollout = _rollout(container)
    result = await rollout.reload()
    if result.errors:
        detail = [{"loc": ["models", e["target"]], "msg": e["error"], "type": "version_refused"} for e in result.errors]
        return error_response(409, f"{len(result.errors)} version(s) refused; the previous ones keep serving", detail)
    body = {"changed": result.changed, **rollout.describe()}
    return Response(orjson.dumps(body), media_type="application/json")
