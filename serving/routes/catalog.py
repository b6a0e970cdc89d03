"""GET /v1/models (+ /v1/models/{model}): the domains as models, in Cohere's list-models shape, so Cohere
clients and UIs can discover what `model` takes. Every servable name is listed: the registered domains
and the default domain (a domain without a version is answered by the base model)."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Request

from serving.protocol import ModelCard, ModelList, errors
from serving.rerank_service import DEFAULT_DOMAIN, RerankService

router = APIRouter(prefix="/v1/models", tags=["models"])


def _cards(request: Request) -> list[ModelCard]:
    service: RerankService = request.app.state.service
    reg = service.registry
    cards = []
    for domain in sorted(set(reg.domains()) | {DEFAULT_DOMAIN}):
        cfg = reg.config(domain) if reg.exists(domain) else {}
        active = cfg.get("active")
        cards.append(ModelCard(
            name=domain, domain=domain, finetuned=bool(active),
            default_endpoints=["rerank"] if domain == DEFAULT_DOMAIN else [],
            context_length=service.input_length(service.domain_model(domain)),
            active_version=f"{domain}@{active}" if active else None,
            ab_split=cfg.get("ab_split") if active else None))
    return cards


@router.get("", response_model=ModelList, response_model_exclude_none=True, responses=errors(422))
async def list_models(request: Request,
                      page_size: int | None = Query(None, ge=1, le=1000, description="Models per page (all if absent)."),
                      page_token: str | None = Query(None, description="next_page_token of the previous page."),
                      endpoint: str | None = Query(None, description="Only models for this endpoint: rerank is "
                                                                     "the only one served."),
                      default_only: bool | None = Query(None, description="Only the endpoint's default model "
                                                                          "(with endpoint).")) -> ModelList:
    if default_only and endpoint is None:
        raise HTTPException(422, "default_only: only valid together with endpoint (as Cohere's API)")
    cards = _cards(request) if endpoint in (None, "rerank") else []
    if default_only:
        cards = [c for c in cards if c.default_endpoints]
    if page_token is not None:  # the token is the last name of the previous page (names are sorted)
        cards = [c for c in cards if c.name > page_token]
    if page_size is not None and len(cards) > page_size:
        cards = cards[:page_size]
        return ModelList(models=cards, next_page_token=cards[-1].name)
    return ModelList(models=cards)


@router.get("/{model}", response_model=ModelCard, response_model_exclude_none=True, responses=errors(404))
async def get_model(model: str, request: Request) -> ModelCard:
    for card in _cards(request):
        if card.name == model:
            return card
    raise HTTPException(404, f"model: no domain {model!r} (GET /v1/models lists them)")
