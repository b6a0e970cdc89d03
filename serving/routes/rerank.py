"""POST /rerank (+ /v1, /v2 aliases), health and metrics. Thin: the work is in RerankService."""
from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Header, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving import metrics
from serving.protocol import RerankRequest, RerankResponse
from serving.rerank_service import BadRequest, RerankService
from state.ids import BASE_MODEL_ID

router = APIRouter()


def _service(request: Request) -> RerankService:
    return request.app.state.service


@router.post("/rerank", response_model=RerankResponse, response_model_exclude_none=True)
@router.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True)
@router.post("/v2/rerank", response_model=RerankResponse, response_model_exclude_none=True)
async def rerank(body: RerankRequest, request: Request, domain: str | None = Query(None),
                 x_user_id: str | None = Header(None), x_session_id: str | None = Header(None)) -> RerankResponse:
    service = _service(request)
    t0 = time.perf_counter()
    name = domain or body.domain or "default"
    try:
        d = service.resolve_domain(domain, body.domain)
        response = await service.rerank(body, d, body.user_id or x_user_id or x_session_id)
    except BadRequest as e:
        metrics.ERRORS.labels(name[:64], str(e.status)).inc()
        raise
    except Exception:
        metrics.ERRORS.labels(name[:64], "500").inc()
        raise
    labels = (response.domain, response.variant, response.model)
    metrics.REQUESTS.labels(*labels).inc()
    metrics.LATENCY.labels(*labels).observe(time.perf_counter() - t0)
    metrics.DOCUMENTS.labels(response.domain).observe(len(body.documents))
    return response


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
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
