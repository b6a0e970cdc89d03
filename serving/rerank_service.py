"""The serving logic behind /rerank as a plain class: testable without HTTP or Ray."""
from __future__ import annotations

import time
import uuid
from typing import Any, Protocol

import numpy as np

from scoring.scorer import Scored
from serving import ab
from serving.ab import Arm
from serving.protocol import DocumentIn, RerankRequest, RerankResponse, RerankResult
from state.ids import BASE_MODEL_ID, InvalidId, validate_domain
from state.registry import Registry
from state.settings import Settings

DEFAULT_DOMAIN = "default"


class Scorer(Protocol):
    async def score(self, model_id: str, query: str, documents: list[str],
                    max_tokens_per_doc: int | None = None) -> Scored:
        """Relevance in 0..1 per document (input order), with how many were cut and windows scored."""

    async def warm(self, model_id: str) -> None:
        """Load a version where it will serve (raises if it cannot), so its first request pays nothing."""


class BadRequest(Exception):
    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status


class ActiveVersionCache:
    """domain -> active version, re-read from the registry at most every `ttl` seconds."""

    def __init__(self, registry: Registry, ttl: float):
        self.registry, self.ttl = registry, ttl
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    def get(self, domain: str) -> dict[str, Any] | None:
        now = time.monotonic()
        hit = self._cache.get(domain)
        if hit and now - hit[0] < self.ttl:
            return hit[1]
        cfg = self.registry.config(domain) if self.registry.exists(domain) else None
        self._cache[domain] = (now, cfg)
        return cfg

    def invalidate(self, domain: str | None = None) -> None:
        if domain is None:
            self._cache.clear()
        else:
            self._cache.pop(domain, None)


class RerankService:
    def __init__(self, registry: Registry, scorer: Scorer, settings: Settings, events: Any = None):
        """events: serving.events.EventLogger (optional): log_rerank() per answered request."""
        self.registry, self.scorer, self.settings, self.events = registry, scorer, settings, events
        self._versions = ActiveVersionCache(registry, settings.registry_cache_ttl_s)

    def invalidate(self, domain: str | None = None) -> None:
        """Forget the cached active version (after promote/rollback through this replica)."""
        self._versions.invalidate(domain)

    # -- steps --------------------------------------------------------------------------------
    def resolve_domain(self, query_domain: str | None, body_domain: str | None) -> str:
        """?domain= wins over the body's domain field; neither means the default domain."""
        domain = query_domain or body_domain or DEFAULT_DOMAIN
        try:
            return validate_domain(domain)
        except InvalidId as e:
            raise BadRequest("domain", str(e)) from e

    def documents(self, req: RerankRequest) -> tuple[list[str], list[DocumentIn | None]]:
        limit = self.settings.max_documents
        if len(req.documents) > limit:
            raise BadRequest("documents", f"at most {limit} documents per request, got {len(req.documents)}")
        if req.max_tokens_per_doc is not None and req.max_tokens_per_doc > self.settings.max_doc_tokens:
            raise BadRequest("max_tokens_per_doc", f"at most {self.settings.max_doc_tokens} on this server, "
                                                   f"got {req.max_tokens_per_doc}")
        texts, objs = [], []
        for d in req.documents:
            if isinstance(d, DocumentIn):
                texts.append(d.text)
                objs.append(d)
            else:
                texts.append(d)
                objs.append(None)
        return texts, objs

    # -- the request --------------------------------------------------------------------------
    async def rerank(self, req: RerankRequest, domain: str, user_key: str | None = None) -> RerankResponse:
        t0 = time.perf_counter()
        texts, objs = self.documents(req)
        arm = ab.choose(domain, self._versions.get(domain), user_key, self.settings.ab_split)
        try:
            scored = await self.scorer.score(arm.model_id, req.query, texts, req.max_tokens_per_doc)
        except Exception as e:  # noqa: BLE001 - a broken domain model must not fail the request
            if arm.variant == ab.BASE:
                raise
            self._versions.invalidate(domain)  # the pool marked it failed; the registry moved on
            arm = Arm(ab.BASE, BASE_MODEL_ID, f"domain model {arm.model_id} failed to load: {e}"[:300])
            scored = await self.scorer.score(arm.model_id, req.query, texts, req.max_tokens_per_doc)
        scores = scored.scores
        order = np.argsort(-np.asarray(scores), kind="stable")
        if req.top_n is not None:
            order = order[: req.top_n]
        results = [
            RerankResult(index=int(i), relevance_score=float(scores[i]),
                         document=(_document(texts[i], objs[i]) if req.return_documents else None))
            for i in order
        ]
        latency_ms = (time.perf_counter() - t0) * 1000
        meta: dict[str, Any] = {"documents": len(texts), "windows": scored.windows,
                                "truncated_documents": scored.truncated, "cached_documents": scored.cached,
                                "latency_ms": round(latency_ms, 2)}
        if arm.reason:
            meta["reason"] = arm.reason
        response = RerankResponse(id=uuid.uuid4().hex, results=results, model=arm.model_id, domain=domain,
                                  variant=arm.variant, meta=meta)
        if self.events is not None:
            self.events.log_rerank(response, req, texts, objs, scores, user_key, latency_ms)
        return response


def _document(text: str, obj: DocumentIn | None) -> dict[str, Any]:
    return obj.model_dump(exclude_none=True) if obj is not None else {"text": text}
