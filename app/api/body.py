"""Reading a JSON request body with a size limit, before any parsing."""

from __future__ import annotations

from fastapi import Request

from app.errors import PayloadTooLarge, UnsupportedMediaType


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body larger than {limit} bytes",
        [{"loc": ["body"], "msg": f"body exceeds {limit} bytes", "type": "body_too_large"}],
    )


async def read_json_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing oversize bodies (413) and non-JSON content types (415)."""
    ctype = request.headers.get("content-type")
    if ctype is not None and not ctype.split(";", 1)[0].strip().lower().endswith("json"):
        raise UnsupportedMediaType(
            f"unsupported content type {ctype.split(';', 1)[0]!r}; send application/json",
            [{"loc": ["header", "content-type"], "msg": "expected application/json", "type": "content_type"}],
        )
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
