"""Hugging Face text-embeddings-inference's rerank API on its own prefix: a TEI client whose base URL is
`<service>/tei/<domain>` reaches `POST .../rerank` and `GET .../info` (TEI serves one model per URL, so
the URL names the domain). Same service underneath: A/B arms, impressions, metrics."""
from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request

from serving import ab
from serving.protocol import DomainPath, RerankRequest, TeiInfo, TeiRank, TeiRerankRequest, UserKeyHeader, errors
from serving.raw_scores import raw_scores
from serving.rerank_service import BadRequest, RerankService
from serving.routes.rerank import answer

router = APIRouter(prefix="/tei/{domain}", tags=["tei"])
_TEI_FIELDS = {"documents": "texts"}  # the service's field names in TEI's words


@router.post("/rerank", response_model=list[TeiRank], response_model_exclude_none=True,
             responses=errors(400, 413, 422, 503))
async def rerank(domain: DomainPath, body: TeiRerankRequest, request: Request, background: BackgroundTasks,
                 x_user_id: UserKeyHeader = None, x_session_id: UserKeyHeader = None) -> list[TeiRank]:
    """TEI's rerank: ranks best first. `truncate` absent or false (TEI's default without --auto-truncate):
    a text that does not fit the model is a 413, as TEI answers; true: cut to the model's length."""
    req = RerankRequest(query=body.query, documents=body.texts)
    try:
        response = await answer(request, background, req, domain, ab.user_key(None, x_user_id, x_session_id),
                                fit="truncate" if body.truncate else "refuse")
    except BadRequest as e:
        field = _TEI_FIELDS.get(e.field, e.field)
        raise BadRequest(field, e.message.replace("ask for truncation", "send truncate=true"), e.status) from e
    scores = [r.relevance_score for r in response.results]
    if body.raw_scores:
        service: RerankService = request.app.state.service
        scores = raw_scores(scores, service.manifest(response.model), fused=bool(response.meta.fused)).tolist()
    return [TeiRank(index=r.index, score=s, text=body.texts[r.index] if body.return_text else None)
            for r, s in zip(response.results, scores)]


@router.get("/info", response_model=TeiInfo)
async def info(domain: DomainPath, request: Request) -> TeiInfo:
    service: RerankService = request.app.state.service
    settings = request.app.state.settings
    cfg = service.registry.config(domain) if service.registry.exists(domain) else {}
    # one relevance label, like a TEI reranker (a sequence-classification model with one class)
    return TeiInfo(model_id=domain, model_sha=cfg.get("active"),
                   max_input_length=service.input_length(service.domain_model(domain)),
                   model_type={"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}},
                   max_concurrent_requests=settings.pool_max_ongoing_requests * settings.pool_replicas,
                   max_batch_tokens=settings.max_length * settings.batch_size,
                   max_client_batch_size=settings.max_documents, version=request.app.version)
