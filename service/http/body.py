"""Reading request bodies: content type, size, JSON syntax, then the model."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from service.errors import KeyledgerError

MAX_BODY_BYTES = 64 * 1024
M = TypeVar("M", bound=BaseModel)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_bytes(request: web.Request, max_bytes: int = MAX_BODY_BYTES) -> bytes | None:
    """The raw body after the content-type and size checks; None when there is none.

    ``max_bytes``: a route whose documented bodies are larger than the
    application's limit (``MAX_BODY_BYTES``) gives its own.
    """
    if not request.body_exists:
        return None
    # The exact header needs no parsing (the common case, on the verify hot path).
    given = request.headers.get("Content-Type")
    if given != "application/json":
        if request.content_type != "application/json":
            raise KeyledgerError("unsupported_media_type", "send the body as application/json")
        if (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
            # JSON is UTF-8 (RFC 8259): a body declared otherwise would be misread.
            raise KeyledgerError(
                "unsupported_media_type", "send the body as application/json in UTF-8"
            )
    content = request.content
    if content.is_eof() and not content.at_eof():
        # The whole body came with the head (every small body does) and nobody has read
        # it yet: take it as it lies in the buffer, without ``read``'s loop of awaits and
        # its copy into a bytearray. A body read before is ``read``'s to answer again; one
        # taken here is gone for ``read`` (bodies are read here only, once a request).
        raw = content.read_nowait()
        if len(raw) > max_bytes:
            raise KeyledgerError("payload_too_large", f"the body is over {max_bytes // 1024} KiB")
        return raw
    if max_bytes != MAX_BODY_BYTES:
        request = request.clone(client_max_size=max_bytes)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise KeyledgerError(
            "payload_too_large", f"the body is over {max_bytes // 1024} KiB"
        ) from exc


def decode_json(raw: bytes | None) -> Any:
    """A body's JSON; 400 ``malformed_json``, or ``invalid_json`` when nested too deeply."""
    if raw is None or not raw.strip():
        return {}
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise KeyledgerError("malformed_json", "the body is not valid UTF-8 JSON") from exc
    except RecursionError as exc:
        # Well-formed maybe, but nested deeper than the parser takes (docs/security.md §1).
        raise KeyledgerError("invalid_json", "the JSON body is nested too deeply") from exc


async def read_json(request: web.Request) -> Any:
    """The parsed JSON body; an absent or empty body is ``{}``."""
    return decode_json(await read_bytes(request))


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors without the offending input (it may be a secret)."""
    return [
        {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]} for err in exc.errors()
    ]


def parse_model(model: type[M], data: Any) -> M:
    """Validate ``data`` against ``model`` or refuse with 422 ``validation_error``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise KeyledgerError(
            "validation_error", "the request body is invalid", validation_details(exc)
        ) from exc


async def read_model(request: web.Request, model: type[M]) -> tuple[M, Any]:
    """The body validated as ``model``, and the raw JSON (for idempotency fingerprints)."""
    data = await read_json(request)
    return parse_model(model, data), data


async def read_body(request: web.Request, model: type[M]) -> M:
    """The body validated as ``model`` (no raw JSON kept): the hot path's ``read_model``."""
    return model_from_bytes(model, await read_bytes(request))


def model_from_bytes(model: type[M], raw: bytes | None) -> M:
    """``raw`` (from ``read_bytes``) validated as ``model``, refused as ``read_model`` refuses.

    pydantic parses and validates the bytes in one pass (no ``json.loads``
    and no intermediate dicts). Whatever it refuses goes through the
    two-step path of ``read_model`` again, so every refusal (400
    ``malformed_json``, 422 ``validation_error`` and its details) is exactly
    the same as there.
    """
    # pydantic's parser takes NaN / Infinity, which ``read_json`` refuses: leave them to it.
    if raw is not None and b"NaN" not in raw and b"Infinity" not in raw:
        try:
            return model.model_validate_json(raw)
        except ValidationError:
            pass
    return parse_model(model, decode_json(raw))
