"""Error responses that name the offending field, and the request-body size limit.

Every error, whatever raised it (validation, a handler's HTTPException, the body limit, auth, an
unexpected exception), has one shape: {"message", "error", "detail": [{"field", "message"}]}.
`message` is the key Cohere's clients read; `error` is the same text.
"""
from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from scoring.scorer import TooManyTokens
from serving.overload import Unavailable
from serving.protocol import ErrorBody
from serving.rerank_service import BadRequest
from state.ids import InvalidId
from state.registry import Conflict, NotFound, RegistryError

# The field an error names when its raiser gave none ("<field>: <problem>" messages name their own).
_FIELD_BY_STATUS = {400: "body", 401: "authorization", 403: "authorization", 404: "path", 405: "method",
                    413: "body", 500: "server", 503: "server"}
_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w.]*): ")


def error_response(status: int, message: str, detail: list[dict[str, str]] | None = None,
                   field: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error shape. Without `detail`, the field is `field`, else the message's "<field>: "
    prefix, else the status's default field."""
    if detail is None:
        m = _FIELD_PREFIX.match(message)
        name = field or (m.group(1) if m else _FIELD_BY_STATUS.get(status, "request"))
        detail = [{"field": name, "message": message[m.end():] if m and m.group(1) == name else message}]
    return JSONResponse({"message": message, "error": message, "detail": detail}, status_code=status,
                        headers=headers)


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
        return error_response(400, f"malformed JSON body: {msg}".strip(": "), field="body")
    detail: list[dict[str, Any]] = []
    seen: set[str] = set()
    for e in errors:
        field = _field(tuple(e.get("loc", ())))
        if field in seen:
            continue
        seen.add(field)
        message = e.get("msg", "invalid")
        if e.get("type") == "extra_forbidden":
            message = "unknown option: refused rather than ignored (see the API in README.md)"
        elif field.startswith("documents.") and field.count(".") == 1:
            message = "must be a string or an object (whose text, if any, is a string)"
        detail.append({"field": field, "message": message.removeprefix("Value error, ")})
    text = "; ".join(f"{d['field']}: {d['message']}" for d in detail)
    return error_response(422, text, detail)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = exc.headers
        if exc.status_code == 405:  # Starlette's Allow names the one route it tried, not the path's others
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return error_response(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(BadRequest)
    async def _bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return error_response(exc.status, str(exc), [{"field": exc.field, "message": exc.message}])

    @app.exception_handler(InvalidId)
    async def _invalid_id(request: Request, exc: InvalidId) -> JSONResponse:
        kind = re.match(r"invalid (domain|version|model)", str(exc))
        return error_response(422, str(exc), field=kind.group(1) if kind else "request")

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return error_response(404, str(exc))

    @app.exception_handler(TooManyTokens)
    async def _too_many_tokens(request: Request, exc: TooManyTokens) -> JSONResponse:
        message = (f"{exc} (RERANKER_MAX_REQUEST_TOKENS): send fewer or shorter documents, "
                   f"or a lower max_tokens_per_doc")
        return error_response(413, f"documents: {message}", [{"field": "documents", "message": message}])

    @app.exception_handler(Unavailable)
    async def _unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return unavailable(str(exc), exc.retry_after_s)

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return error_response(409, str(exc), field="expected_active")  # the message names the active version

    @app.exception_handler(RegistryError)
    async def _registry(request: Request, exc: RegistryError) -> JSONResponse:
        return error_response(409, str(exc), field="version")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's ServerErrorMiddleware logs the traceback and answers with this body
        return error_response(500, f"internal error: {type(exc).__name__}", field="server")


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on the request's path (FastAPI makes one route per method), asked
    of the router itself: which methods would fully match."""
    scope = {k: v for k, v in request.scope.items() if k in ("type", "path", "root_path", "app")}
    return [m for m in _METHODS
            if any(route.matches({**scope, "method": m})[0] == Match.FULL for route in request.app.routes)]


def unavailable(message: str, retry_after_s: int) -> JSONResponse:
    """503 with Retry-After: overloaded, deadline passed, replica lost or stopping; try again later."""
    return error_response(503, message, headers={"Retry-After": str(retry_after_s)})


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
    """An HTTPException so that FastAPI's body parsing passes it on (it turns other errors into a 400)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body over the {limit} byte limit")


async def _too_large(send: Any, limit: int) -> None:
    await error_response(413, f"request body over the {limit} byte limit", field="body")({"type": "http"}, None, send)


# ---- OpenAPI: the errors every operation can answer ---------------------------------------------
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
_GENERIC = {400: "Malformed JSON body", 413: "Request body over the size limit",
            422: "Invalid parameter or body field (named in `detail`)"}


def document(app: FastAPI) -> None:
    """Make the OpenAPI spec declare what the handlers above really answer, for every operation
    (those of routers added later too): ErrorBody instead of FastAPI's default 422 shape, and 400,
    413 and 422 wherever there is a request body, 422 wherever there are parameters. Read from the
    generated spec, not the routes: routes declare their own other codes with `protocol.errors()`."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        for path_item in schema.get("paths", {}).values():
            for op in path_item.values():
                if not isinstance(op, dict) or "responses" not in op:
                    continue
                codes = ({400, 413, 422} if "requestBody" in op else set()) | ({422} if op.get("parameters") else set())
                responses = op["responses"]
                for code in sorted(codes):
                    responses.setdefault(str(code), {"description": _GENERIC[code], "content": _ERROR_CONTENT})
                for resp in responses.values():
                    if "HTTPValidationError" in str(resp.get("content")):
                        resp["content"] = _ERROR_CONTENT
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 shape, never answered
            schemas.pop(name, None)
        if "ErrorBody" not in schemas:
            body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(body.pop("$defs", {}))
            schemas["ErrorBody"] = body
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
