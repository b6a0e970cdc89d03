"""Passages registered ahead of time: a JSONL upload embedded in the background with the domain's champion
and the base, so that requests sending them are answered from the embedding store (meta.cached_documents)."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, HTTPException, Request

from serving import passages
from serving.auth import require_admin
from serving.protocol import DomainPath, PassagesAccepted, PassagesInfo, errors
from serving.upload import received_body
from state.ids import BASE_MODEL_ID
from state.passages import InvalidPassages, PassageStore, parse_jsonl

router = APIRouter(prefix="/v1/domains", tags=["passages"])


def embedding_models(request: Request, domain: str, texts: list[str]) -> list[str]:
    """What requests of the domain are scored with and can reuse embeddings of: its active version when
    that is a bi-encoder, and the base that reads the passages' language (base routing)."""
    service = request.app.state.service
    champion = service.domain_model(domain)
    models = [champion] if champion != BASE_MODEL_ID and service.manifest(champion).get("kind") == "bi-encoder" else []
    return models + [service.router.choose("", texts)[0]]


def _known(request: Request, domain: str) -> None:
    if not request.app.state.service.knows(domain):
        raise HTTPException(404, f"unknown domain {domain!r}")


@router.post("/{domain}/passages", status_code=202, response_model=PassagesAccepted,
             dependencies=[Depends(require_admin)], responses=errors(401, 403, 404, 413, 422),
             openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {
                 "schema": {"type": "string", "format": "binary",
                            "description": 'JSONL: one {"id"?: string, "text": string} per line'}}}}})
async def register_passages(domain: DomainPath, request: Request) -> PassagesAccepted:
    """Body: JSONL, one {"id"?, "text"} per line (at most RERANKER_MAX_DATA_UPLOAD_BYTES,
    RERANKER_MAX_PASSAGES_PER_UPLOAD lines, RERANKER_MAX_PASSAGE_CHARS per text). A bad line: 422 naming
    it, nothing registered. Registered texts are embedded by a background job (GET /v1/jobs/{job_id})."""
    _known(request, domain)
    settings = request.app.state.settings
    async with received_body(request, "passages.jsonl") as body:
        try:
            parsed = await asyncio.to_thread(parse_jsonl, body, settings.max_passages_per_upload,
                                             settings.max_passage_chars)
        except InvalidPassages as e:
            raise HTTPException(422, f"body: {e}") from None
    added, known = await asyncio.to_thread(PassageStore(settings.home).add, domain, parsed)
    # every text of the upload: one registered before may not be stored with today's champion
    texts = list(dict.fromkeys(text for _, text in parsed))
    models = await asyncio.to_thread(embedding_models, request, domain, texts)
    job_id = passages.start_job(request.app.state, domain, models, texts, "upload")
    return PassagesAccepted(domain=domain, job_id=job_id, passages=len(parsed), added=added,
                            already_registered=known, models=models)


@router.get("/{domain}/passages", response_model=PassagesInfo, responses=errors(404, 422))
async def passages_info(domain: DomainPath, request: Request) -> PassagesInfo:
    _known(request, domain)
    count = await asyncio.to_thread(PassageStore(request.app.state.settings.home).count, domain)
    return PassagesInfo(domain=domain, passages=count)
