"""Error responses that name the offending field, and the request-body size limit."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.rerank_service import BadRequest
from state.ids import InvalidId
from state.registry import NotFound, RegistryError


def _field(loc: tuple) -> str:
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    parts = [str(p) for p in loc]
    # documents.3.str / documents.3.DocumentIn.text -> documents.3 (the union's branch names are noise)
    if len(parts) >= 2 and parts[0] == "documents" and parts[1].isdigit():
        return ".".join(parts[:2])
    return ".".join(parts) or "body"


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        msg = next(e.get("ctx", {}).get("error", "") for e in errors if e.get("type") == "json_invalid")
        return JSONResponse({"error": f"malformed JSON body: {msg}".strip(": ")}, status_code=400)
    detail: list[dict[str, Any]] = []
    seen: set[str] = set()
    for e in errors:
        field = _field(tuple(e.get("loc", ())))
        if field in seen:
            continue
        seen.add(field)
        message = e.get("msg", "invalid")
        if field.startswith("documents.") and field.count(".") == 1:
            message = "must be a string or an object with a 'text' string"
        detail.append({"field": field, "message": message.removeprefix("Value error, ")})
    text = "; ".join(f"{d['field']}: {d['message']}" for d in detail)
    return JSONResponse({"error": text, "detail": detail}, status_code=422)


def install(app: FastAPI) -> None:
    """Every error body has the same shape: {"error": "<field>: <what is wrong>", "detail"?: [...]}."""
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(BadRequest)
    async def _bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(exc), "detail": [{"field": exc.field, "message": exc.message}]},
                            status_code=exc.status)

    @app.exception_handler(InvalidId)
    async def _invalid_id(request: Request, exc: InvalidId) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=404)

    @app.exception_handler(RegistryError)
    async def _registry(request: Request, exc: RegistryError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=409)


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit, counted as they stream (Content-Length may lie)."""

    def __init__(self, app: Any, max_bytes: int, upload_max_bytes: int, upload_suffix: str = "/versions",
                 more_limits: dict[str, int] | None = None):
        self.app, self.max_bytes, self.upload_max = app, max_bytes, upload_max_bytes
        self.upload_suffix = upload_suffix
        self.more_limits = more_limits or {}  # path suffix -> its own limit (e.g. training data uploads)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.upload_max if scope["path"].endswith(self.upload_suffix) else self.max_bytes
        limit = next((v for suffix, v in self.more_limits.items() if scope["path"].endswith(suffix)), limit)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _too_large(send, limit)
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await _too_large(send, limit)


class _TooLarge(HTTPException):
    """An HTTPException so that FastAPI's form parsing passes it on (it turns other errors into a 400)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body over the {limit} byte limit")


async def _too_large(send: Any, limit: int) -> None:
    await JSONResponse({"error": f"request body over the {limit} byte limit"}, status_code=413)(
        {"type": "http"}, None, send)
