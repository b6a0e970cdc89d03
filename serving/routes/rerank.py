"""POST /rerank (+ /v1, /v2 aliases), health and metrics. Thin: the work is in RerankService."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from scoring.scorer import TooManyTokens
from serving import ab, metrics, redact
from serving.overload import Unavailable
from serving.protocol import DomainQuery, Readiness, RerankRequest, RerankResponse, UserKeyHeader, errors
from serving.rerank_service import BadRequest, RerankService
from state.settings import Settings

router = APIRouter()


def _service(request: Request) -> RerankService:
    return request.app.state.service


@router.post("/rerank", response_model=RerankResponse, response_model_exclude_none=True,
             responses=errors(400, 413, 422, 503))
@router.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True,
             responses=errors(400, 413, 422, 503))
@router.post("/v2/rerank", response_model=RerankResponse, response_model_exclude_none=True,
             responses=errors(400, 413, 422, 503))
async def rerank(body: RerankRequest, request: Request, background: BackgroundTasks, domain: DomainQuery = None,
                 x_user_id: UserKeyHeader = None, x_session_id: UserKeyHeader = None) -> RerankResponse:
    """Cohere's rerank. The domain: `model` (a domain id, `domain:<id>`, or a Cohere model id that names
    none), `?domain=`, the body's `domain`, else the default; a `model` and a domain that disagree are a 422."""
    d = _service(request).resolve_domain(domain, body.domain, body.model)
    api_version = "1" if request.url.path.startswith("/v1/") else "2"
    return await answer(request, background, body, d, ab.user_key(body.user_id, x_user_id, x_session_id),
                        api_version=api_version)


async def answer(request: Request, background: BackgroundTasks, body: RerankRequest, domain: str,
                 user_key: str | None, **options: Any) -> RerankResponse:
    """One rerank through the service, counted in the metrics: what every rerank route does. The
    impression is logged in `background`, after the response is sent; 503 + Retry-After when the deadline
    (RERANKER_REQUEST_TIMEOUT_S) passes or the pool sheds load; 413 over RERANKER_MAX_REQUEST_TOKENS."""
    t0 = time.perf_counter()
    label = metrics.domain_label(domain, _service(request).knows(domain))
    try:
        response = await _service(request).rerank(body, domain, user_key, defer=background.add_task, **options)
    except BadRequest as e:
        metrics.ERRORS.labels(label, str(e.status)).inc()
        raise
    except (TooManyTokens, Unavailable) as e:
        metrics.ERRORS.labels(label, "413" if isinstance(e, TooManyTokens) else "503").inc()
        raise
    except Exception:
        metrics.ERRORS.labels(label, "500").inc()
        raise
    metrics.observe(response, time.perf_counter() - t0, len(body.documents), label)
    return response


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, response_model_exclude_none=True,
            responses={503: {"model": Readiness, "description": "a base model does not answer"}})
async def readyz(request: Request, response: Response) -> Readiness:
    """Ready only when every base answers a real scoring call: the base, and the multilingual base when
    base routing is on (a request in German would otherwise fail on a replica called ready).
    `events_backlog`: impressions waiting in the spill file (they do not make the service unready: the
    replay runs by itself)."""
    backlog = await asyncio.to_thread(request.app.state.replayer.count)
    service = _service(request)
    bases = list(service.base_dirs)
    try:
        await asyncio.wait_for(asyncio.gather(*(service.scorer.score(b, "ping", ["pong"]) for b in bases)),
                               timeout=10 * len(bases))
        return Readiness(status="ready", bases=bases, events_backlog=backlog)
    except Exception as e:  # noqa: BLE001
        response.status_code = 503
        return Readiness(status="not ready", bases=bases, error=redact.paths(str(e))[:300], events_backlog=backlog)


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def declare_limits(app: Any, settings: Settings) -> None:
    """The spec states this server's limits on a rerank body, which come from settings: documents
    per request and max_tokens_per_doc (generated "valid" requests then stay within them)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        props = schema.get("components", {}).get("schemas", {}).get("RerankRequest", {}).get("properties", {})
        if "documents" in props:
            props["documents"]["maxItems"] = settings.max_documents
        for branch in props.get("max_tokens_per_doc", {}).get("anyOf", []):
            if branch.get("type") == "integer":
                branch["maximum"] = settings.max_doc_tokens
        return schema

    app.openapi = openapi
