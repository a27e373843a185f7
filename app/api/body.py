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

from app.errors import PayloadTooLarge, UnsupportedMediaType

OCTET_STREAM = "application/octet-stream"


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body larger than {limit} bytes",
        [{"loc": ["body"], "msg": f"body exceeds {limit} bytes", "type": "body_too_large"}],
    )


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
    encoding = headers.get("content-encoding")
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
    ctype = headers.get("content-type")
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
        try:
            declared = int(length)
        except ValueError:
            declared = limit + 1
        if declared > limit:
            raise _too_large(limit)
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
