"""Reading a JSON request body: its content type first, then a size limit, before any parsing.

JSON routes accept ``application/json`` and any ``+json`` media type
(``application/vnd.api+json``), with parameters such as ``charset``; any
other Content-Type, or none at all, is 415. The V2 infer route also takes
what Triton's clients send: no Content-Type at all, and
``application/octet-stream`` for a binary-extension body
(``Inference-Header-Content-Length`` set). A compressed body (any
Content-Encoding but ``identity``) is 415 naming that header: bodies are read
as sent, so compressed bytes would otherwise be refused as invalid JSON.
"""

from __future__ import annotations

from fastapi import Request
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope

from app.errors import PayloadTooLarge, UnsupportedMediaType

OCTET_STREAM = "application/octet-stream"
_CONTENT_TYPE = b"content-type"
_CONTENT_LENGTH = b"content-length"
_JSON = b"application/json"


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body larger than {limit} bytes",
        [{"loc": ["body"], "msg": f"body exceeds {limit} bytes", "type": "body_too_large"}],
    )


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _check_declared(length: str | bytes, limit: int) -> None:
    """413 when the declared Content-Length is over ``limit`` (or not a number: it cannot be trusted)."""
    try:
        declared = int(length)
    except ValueError:
        declared = limit + 1
    if declared > limit:
        raise _too_large(limit)


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or a ``type/subtype+json``, parameters ignored."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    kind, slash, subtype = media_type.partition("/")
    if not (kind and slash and subtype):
        return False
    return media_type == "application/json" or (subtype.endswith("+json") and len(subtype) > len("+json"))


def check_content_type(request: Request, *, missing_ok: bool = False, binary: bool = False) -> None:
    """415 unless the body is declared as JSON (or binary, or undeclared, where the route allows it), uncompressed."""
    headers = request.headers
    check_media_type(headers.get("content-type"), headers.get("content-encoding"), missing_ok=missing_ok, binary=binary)


def check_media_type(
    ctype: str | None, encoding: str | None = None, *, missing_ok: bool = False, binary: bool = False
) -> None:
    """``check_content_type`` of the Content-Type and Content-Encoding values (None: the header is absent)."""
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        raise UnsupportedMediaType(
            f"unsupported content encoding {encoding.strip()[:64]!r}; send the body uncompressed",
            [
                {
                    "loc": ["header", "content-encoding"],
                    "msg": "expected identity (uncompressed)",
                    "type": "content_encoding",
                }
            ],
        )
    if ctype is None:
        if missing_ok:
            return
        shown = "none"
    else:
        if is_json_media_type(ctype):
            return
        if binary and ctype.split(";", 1)[0].strip().lower() == OCTET_STREAM:
            return
        shown = repr(ctype.split(";", 1)[0].strip()[:64])
    raise UnsupportedMediaType(
        f"unsupported content type {shown}; send application/json",
        [{"loc": ["header", "content-type"], "msg": "expected application/json", "type": "content_type"}],
    )


async def read_json_body(request: Request, limit: int, *, missing_ok: bool = False, binary: bool = False) -> bytes:
    """The raw body, refusing non-JSON content types (415) and oversize bodies (413)."""
    check_content_type(request, missing_ok=missing_ok, binary=binary)
    length = request.headers.get("content-length")
    if length is not None:
        _check_declared(length, limit)
        return await request.body()
    # Chunked: stream and stop as soon as the limit is passed.
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def receive_json_body(
    scope: Scope,
    receive: Receive,
    limit: int,
    ctype: bytes | None,
    length: bytes | None,
    encoding: bytes | None = None,
    *,
    missing_ok: bool = False,
    binary: bool = False,
) -> bytes:
    """``read_json_body`` straight from ASGI: the same checks, errors and order, without a ``Request``.

    ``ctype``, ``length`` and ``encoding`` are the request's first
    Content-Type, Content-Length and Content-Encoding values (None when
    absent), which the caller has read in its one pass over the headers. The
    body is read from ``receive`` as ``Request.stream`` reads it
    (``ClientDisconnect`` when the client has gone).
    """
    if ctype != _JSON or encoding is not None:  # the common case needs no decoding
        check_media_type(_text(ctype), _text(encoding), missing_ok=missing_ok, binary=binary)
    if length is not None:
        _check_declared(length, limit)
    message = await receive()
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if not message.get("more_body", False):
                if not chunks:  # one message: the whole body, no join
                    if len(chunk) > limit:
                        raise _too_large(limit)
                    return chunk
                chunks.append(chunk)
                break
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()
        message = await receive()
    body = b"".join(chunks)
    if len(body) > limit:
        raise _too_large(limit)
    return body
