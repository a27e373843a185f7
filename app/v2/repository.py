"""The repository extension's index: every version and alias, with its state.

KServe's and Triton's repository extension (``POST /v2/repository/index``)
answers ``[{"name", "version", "state", "reason"}]``. Here the names are those
the data plane serves: ``modelserve`` once per version on disk, and each
alias on disk. ``state`` is ``READY`` when that name and version answer
inference now, else ``UNAVAILABLE`` with the reason: not loaded (no alias or
flag names it), refused when it was loaded (the last error), or the service
is not ready. An alias whose link moved to a version that was refused lists
the version it still serves (``READY``) and the refused one.

Versions are loaded and unloaded by promoting aliases (``modelserve
promote``), never through the API, so the extension's load and unload
answer ``NotSupported`` (400, the status the extension gives a failed load;
see ``app.errors.NotSupported``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, NotRequired

from pydantic import ConfigDict, StrictBool, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from app.errors import NotSupported, clip, from_pydantic
from app.v2.types import MODEL_NAME

READY = "READY"
UNAVAILABLE = "UNAVAILABLE"
NOT_LOADED = "not loaded: no alias or rollout flag names this version"


class IndexRequest(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[misc]
    ready: NotRequired[StrictBool]
    """Only models that are ready."""


_INDEX_REQUEST = TypeAdapter(IndexRequest)


def parse_index_request(body: bytes) -> bool:
    """Whether the (optional) index request asks for ready models only; ``ValidationFailed`` naming the field."""
    if not body.strip():
        return False  # tritonclient posts an empty body
    try:
        return _INDEX_REQUEST.validate_json(body).get("ready", False)
    except ValidationError as exc:
        raise from_pydantic(exc, what="invalid repository index request") from None


def repository_index(
    versions: Iterable[str],
    aliases: Mapping[str, str],
    loaded: Collection[str],
    serving: Mapping[str, str],
    refused: Mapping[str, str],
    not_ready: str | None = None,
    ready_only: bool = False,
) -> list[dict[str, Any]]:
    """The index entries, ``modelserve``'s versions first, then the aliases, each sorted.

    ``versions`` and ``aliases`` (name -> version) are what is on disk;
    ``loaded`` the versions ``modelserve/versions/{v}`` answers, ``serving``
    the alias -> version loaded for each alias; ``refused`` version -> why it
    failed to load; ``not_ready`` why the service is not ready, if it is not.
    """

    def entry(name: str, version: str, reason: str | None) -> dict[str, Any]:
        reason = reason if reason is not None else not_ready
        return {"name": name, "version": version, "state": UNAVAILABLE if reason else READY, "reason": reason or ""}

    def unloaded(version: str) -> str:
        return f"refused: {refused[version]}" if version in refused else NOT_LOADED

    out = [entry(MODEL_NAME, v, None if v in loaded else unloaded(v)) for v in sorted({*versions, *loaded})]
    for alias in sorted({*aliases, *serving}):
        served, on_disk = serving.get(alias), aliases.get(alias)
        if served is not None:
            out.append(entry(alias, served, None))
        if on_disk is not None and on_disk != served:
            out.append(entry(alias, on_disk, unloaded(on_disk)))
    return [e for e in out if e["state"] == READY] if ready_only else out


def not_supported(action: str, name: str) -> NotSupported:
    """The answer to the extension's load and unload."""
    return NotSupported(
        f"{action} is not supported: versions are served by aliases; promote with the CLI "
        f"(modelserve promote VERSION --alias ALIAS), the server follows within seconds",
        [{"loc": ["path", "name"], "msg": f"cannot {action} {clip(name)!r} through the API", "type": "not_supported"}],
    )
