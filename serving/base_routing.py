"""Base routing (issue 21): which base answers a request that a base answers (no domain model, the base
arm of an A/B test, the fallback of a domain model that failed to load).

With RERANKER_MULTILINGUAL_BASE set, the request's language, detected torch-free over a sample of its
query and documents (scoring.fusion.request_language, the same call and sample the pool's request-local
BM25 fusion uses), picks the base that reads it: `base_model` (MiniLM) for a language in
RERANKER_BASE_LANGUAGES, the multilingual base (e5) for any other. Without it, the one base answers
everything, as before. Dev figures behind the choice: README, "Which base serves requests without a
domain model".
"""
from __future__ import annotations

from scoring.fusion import LocalLexical, request_language
from state.ids import BASE_MODEL_ID, MULTILINGUAL_BASE_ID
from state.settings import Settings


class BaseRouter:
    def __init__(self, settings: Settings):
        self.enabled = bool(settings.multilingual_base)
        self._base = LocalLexical(**settings.base_lexical())  # the languages the base reads

    def choose(self, query: str, documents: list[str]) -> tuple[str, str | None]:
        """(model id of the base that answers, the detected language; None when routing is off)."""
        if not self.enabled:
            return BASE_MODEL_ID, None
        language = request_language(query, documents)
        reads = self._base.languages is None or language in self._base.languages
        return (BASE_MODEL_ID if reads else MULTILINGUAL_BASE_ID), language
