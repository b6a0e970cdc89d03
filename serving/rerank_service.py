"""The serving logic behind /rerank as a plain class: testable without HTTP or Ray."""
from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from dataclasses import replace
from typing import Any, Callable, Literal, Protocol

import numpy as np

from scoring.files import MANIFEST
from scoring.scorer import Scored, TooManyTokens
from serving import ab, model_names, overload
from serving.ab import Arm
from serving.base_routing import BaseRouter
from serving.protocol import DocumentIn, RerankRequest, RerankResponse, RerankResult
from state.ids import BASE_MODEL_ID, MULTILINGUAL_BASE_ID, InvalidId, split_model_id, validate_domain
from state.ids import model_id as versioned_id
from state.registry import Registry
from state.settings import Settings

DEFAULT_DOMAIN = "default"
Fit = Literal["windows", "truncate", "refuse"]
DOCUMENTS_PER_SEARCH_UNIT = 100  # Cohere bills one search unit per query and up to 100 documents


class Scorer(Protocol):
    async def score(self, model_id: str, query: str, documents: list[str],
                    max_tokens_per_doc: int | None = None, truncate: bool = False) -> Scored:
        """Relevance in 0..1 per document (input order), with how many were cut and windows scored.
        truncate: each document's first window only; `truncated` then counts those that did not fit."""

    async def warm(self, model_id: str) -> None:
        """Load a version where it will serve (raises if it cannot), so its first request pays nothing."""

    async def embed(self, model_id: str, documents: list[str]) -> int:
        """Store passage embeddings with a (bi-encoder) model ahead of requests; how many were computed."""


class BadRequest(Exception):
    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status


class ActiveVersionCache:
    """domain -> active version, re-read from the registry at most every `ttl` seconds.
    Bounded: requests for many made-up domains must not grow it without limit."""

    def __init__(self, registry: Registry, ttl: float, max_entries: int = 4096):
        self.registry, self.ttl, self.max_entries = registry, ttl, max_entries
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    def get(self, domain: str) -> dict[str, Any] | None:
        now = time.monotonic()
        hit = self._cache.get(domain)
        if hit and now - hit[0] < self.ttl:
            return hit[1]
        cfg = self.registry.config(domain) if self.registry.exists(domain) else None
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
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
        self.base_dir = registry.base_dir(settings.base_model, settings.max_length, settings.builds_openvino)  # its manifest says how the base scores
        self.base_dirs = {BASE_MODEL_ID: self.base_dir}
        if settings.multilingual_base:
            self.base_dirs[MULTILINGUAL_BASE_ID] = registry.base_dir(settings.multilingual_base, settings.max_length,
                                                                     settings.builds_openvino)
        self.router = BaseRouter(settings)
        self._manifests: dict[str, dict[str, Any]] = {}

    def invalidate(self, domain: str | None = None) -> None:
        """Forget the cached active version (after promote/rollback through this replica)."""
        self._versions.invalidate(domain)

    def knows(self, domain: str) -> bool:
        """The default domain, or a registered one (cached like the active version)."""
        return domain == DEFAULT_DOMAIN or self._versions.get(domain) is not None

    # -- steps --------------------------------------------------------------------------------
    def resolve_domain(self, query_domain: str | None, body_domain: str | None, model: str | None = None) -> str:
        """`model` (serving/model_names.py) and ?domain= (which wins over the body's domain field) must agree;
        none of them means the default domain."""
        try:
            domain = model_names.choose_domain(model, query_domain or body_domain, DEFAULT_DOMAIN)
        except model_names.ModelNameError as e:
            raise BadRequest("model", str(e)) from e
        if model == MULTILINGUAL_BASE_ID and model not in self.base_dirs:
            raise BadRequest("model", f"{model!r}: this server has no multilingual base (RERANKER_MULTILINGUAL_BASE)")
        try:
            return validate_domain(domain)
        except InvalidId as e:
            raise BadRequest("domain", str(e)) from e

    def documents(self, req: RerankRequest) -> tuple[list[str], list[DocumentIn | None]]:
        """The text scored for each document, and the document object (None for a plain string)."""
        limit = self.settings.max_documents
        if len(req.documents) > limit:
            raise BadRequest("documents", f"at most {limit} documents per request, got {len(req.documents)}")
        if req.max_tokens_per_doc is not None and req.max_tokens_per_doc > self.settings.max_doc_tokens:
            raise BadRequest("max_tokens_per_doc", f"at most {self.settings.max_doc_tokens} on this server, "
                                                   f"got {req.max_tokens_per_doc}")
        texts, objs = [], []
        for i, d in enumerate(req.documents):
            obj = d if isinstance(d, DocumentIn) else None
            if req.rank_fields:
                text = _fields_text(obj.model_dump(exclude_none=True) if obj else {"text": d}, req.rank_fields)
                if not text:
                    raise BadRequest(f"documents.{i}", f"has none of the rank_fields {req.rank_fields}")
            elif obj is not None and obj.text is None:
                raise BadRequest(f"documents.{i}", "must be a string or an object with a 'text' string "
                                                   "(or name the fields to rank on in rank_fields)")
            else:
                text = obj.text if obj is not None else d
            texts.append(text)
            objs.append(obj)
        return texts, objs

    def manifest(self, model_id: str) -> dict[str, Any]:
        """manifest.json of the model that answered (`response.model`); versions never change once published."""
        if model_id not in self._manifests:
            if model_id in self.base_dirs:
                self._manifests[model_id] = json.loads((self.base_dirs[model_id] / MANIFEST).read_text())
            else:
                self._manifests[model_id] = self.registry.manifest(*split_model_id(model_id))
        return self._manifests[model_id]

    def domain_model(self, domain: str) -> str:
        """The id of the domain's own model: its active version, else the base."""
        active = (self._versions.get(domain) or {}).get("active")
        return versioned_id(domain, active) if active else BASE_MODEL_ID

    def input_length(self, model_id: str) -> int:
        """Tokens the model reads per (query, document): the server's max_length or the version's, if lower."""
        limit = self.settings.max_length
        return min(limit, int(self.manifest(model_id).get("max_length", limit)))

    async def score(self, req: RerankRequest, domain: str, texts: list[str], user_key: str | None,
                    truncate: bool) -> tuple[Arm, Scored]:
        """The A/B arm and its scores; a domain model that fails to load falls back to the base. A base
        named in `model` answers as asked; otherwise base routing picks the base that reads the request."""
        if req.model == MULTILINGUAL_BASE_ID:
            arm = Arm(ab.BASE, req.model, f"{req.model} requested in model", requested=True)
        else:
            arm = await self._route(ab.choose(domain, self._versions.get(domain), user_key, self.settings),
                                    req.query, texts)
        try:
            return arm, await self.scorer.score(arm.model_id, req.query, texts, req.max_tokens_per_doc,
                                                truncate=truncate)
        except (TooManyTokens, overload.Unavailable):
            raise  # the request's size or the service's load: the base would fare no better
        except Exception as e:  # noqa: BLE001 - a broken domain model must not fail the request
            if self.events is not None:  # the arm's error rate: a guardrail of the decision rule
                self.events.log_error(domain, arm.variant, arm.model_id, f"{type(e).__name__}: {e}")
            if arm.variant == ab.BASE:
                raise
            self._versions.invalidate(domain)  # the pool marked it failed; the registry moved on
            arm = await self._route(Arm(ab.BASE, BASE_MODEL_ID, f"domain model {arm.model_id} failed to load: {e}"[:300]),
                                    req.query, texts)
            return arm, await self.scorer.score(arm.model_id, req.query, texts, req.max_tokens_per_doc,
                                                truncate=truncate)

    async def _route(self, arm: Arm, query: str, texts: list[str]) -> Arm:
        """The base arm goes to the base that reads the request's language (serving/base_routing.py); the
        detection (~1 ms: the head of each text) runs off the event loop."""
        if arm.variant != ab.BASE or not self.router.enabled:
            return arm
        model_id, language = await asyncio.to_thread(self.router.choose, query, texts)
        return replace(arm, model_id=model_id, language=language)

    # -- the request --------------------------------------------------------------------------
    async def rerank(self, req: RerankRequest, domain: str, user_key: str | None = None, api_version: str = "2",
                     fit: Fit = "windows", defer: Callable[..., Any] | None = None) -> RerankResponse:
        """fit: how a document longer than the model's input is scored: over windows up to
        max_tokens_per_doc ("windows"), by its first window only ("truncate"), or not at all: an error
        (413, "refuse"; TEI's truncate=false).
        defer(func, *args): how to log the impression; the HTTP routes pass their BackgroundTasks.add_task,
        so an impression is logged only once its response was sent (a request cut before that, by its
        deadline, a client that left or a stop, logs nothing). None logs it at once.
        Not answered within RERANKER_REQUEST_TIMEOUT_S: Unavailable (503 + Retry-After)."""
        t0 = time.perf_counter()
        texts, objs = self.documents(req)
        timeout = self.settings.request_timeout_s
        with overload.deadline(timeout):
            try:
                arm, scored = await asyncio.wait_for(
                    self.score(req, domain, texts, user_key, truncate=fit != "windows"), timeout)
            except TimeoutError:
                raise overload.Unavailable(f"server: not answered within the {timeout:g} s request deadline",
                                           self.settings.retry_after_s) from None
        if fit == "refuse" and scored.truncated:
            raise BadRequest("documents", f"{scored.truncated} of {len(texts)} do not fit the model's input "
                                          f"({self.input_length(arm.model_id)} tokens with the query); "
                                          f"ask for truncation to cut them", status=413)
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
                                "latency_ms": round(latency_ms, 2), "api_version": {"version": api_version},
                                "billed_units": {"search_units": math.ceil(len(texts) / DOCUMENTS_PER_SEARCH_UNIT)}}
        if scored.fused:  # sigmoid of neural and lexical z-scores (scoring/fusion.py)
            meta["fused"] = True
        if arm.reason:
            meta["reason"] = arm.reason
        if arm.language:
            meta["language"] = arm.language
        response = RerankResponse(id=uuid.uuid4().hex, results=results, model=arm.model_id, domain=domain,
                                  variant=arm.variant, meta=meta)
        if self.events is not None:
            impression = (response, req, texts, objs, scores, user_key, latency_ms,
                          ab.REQUESTED if arm.requested else arm.variant)
            if defer is not None:
                defer(self._log, *impression)
            else:
                self.events.log_rerank(*impression)
        return response

    async def _log(self, *impression: Any) -> None:
        """Async on purpose: BackgroundTasks would run a plain function in a worker thread, off the
        logger's event loop."""
        self.events.log_rerank(*impression)


def _document(text: str, obj: DocumentIn | None) -> dict[str, Any]:
    return obj.model_dump(exclude_none=True) if obj is not None else {"text": text}


def _fields_text(doc: dict[str, Any], fields: list[str]) -> str:
    """Cohere v1's rank_fields: the named fields, in the order given, one 'field: value' line each
    (fields a document lacks are skipped). A few lines of formatting: no library does exactly this."""
    lines = []
    for f in fields:
        if doc.get(f) is not None:
            v = doc[f]
            lines.append(f"{f}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}")
    return "\n".join(lines)
