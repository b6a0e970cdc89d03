"""POST /rerank (+ /v1, /v2 aliases), health and metrics. Thin: the work is in RerankService."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Header, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving import ab, metrics
from serving.protocol import DomainQuery, RerankRequest, RerankResponse, errors
from serving.rerank_service import BadRequest, RerankService
from state.ids import BASE_MODEL_ID

router = APIRouter()


def _service(request: Request) -> RerankService:
    return request.app.state.service


@router.post("/rerank", response_model=RerankResponse, response_model_exclude_none=True,
             responses=errors(400, 413, 422))
@router.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True,
             responses=errors(400, 413, 422))
@router.post("/v2/rerank", response_model=RerankResponse, response_model_exclude_none=True,
             responses=errors(400, 413, 422))
async def rerank(body: RerankRequest, request: Request, domain: DomainQuery = None,
                 x_user_id: str | None = Header(None), x_session_id: str | None = Header(None)) -> RerankResponse:
    """Cohere's rerank. The domain: `model` (a domain id, `domain:<id>`, or a Cohere model id that names
    none), `?domain=`, the body's `domain`, else the default; a `model` and a domain that disagree are a 422."""
    d = _service(request).resolve_domain(domain, body.domain, body.model)
    api_version = "1" if request.url.path.startswith("/v1/") else "2"
    return await answer(request, body, d, ab.user_key(body.user_id, x_user_id, x_session_id), api_version=api_version)


async def answer(request: Request, body: RerankRequest, domain: str, user_key: str | None,
                 **options: Any) -> RerankResponse:
    """One rerank through the service, counted in the metrics: what every rerank route does."""
    t0 = time.perf_counter()
    try:
        response = await _service(request).rerank(body, domain, user_key, **options)
    except BadRequest as e:
        metrics.ERRORS.labels(domain, str(e.status)).inc()
        raise
    except Exception:
        metrics.ERRORS.labels(domain, "500").inc()
        raise
    metrics.observe(response, time.perf_counter() - t0, len(body.documents))
    return response


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "the base model does not answer"}})
async def readyz(request: Request, response: Response) -> dict:
    """Ready only when the base model answers a real scoring call."""
    try:
        await asyncio.wait_for(_service(request).scorer.score(BASE_MODEL_ID, "ping", ["pong"]), timeout=10)
        return {"status": "ready"}
    except Exception as e:  # noqa: BLE001
        response.status_code = 503
        return {"status": "not ready", "error": str(e)[:300]}


@router.get("/metrics")
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
