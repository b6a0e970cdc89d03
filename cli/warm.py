"""A version's passages embedded on this node before the CLI lets it take traffic (`reranker promote`,
`reranker challenger`): the same warm-up the HTTP promote runs through the pool (serving/passages.py),
here in-process on the node's embedding store, which the pool replicas of this node read.

The domain's most frequently shown, then registered, passages are embedded for at most
RERANKER_PROMOTE_WARM_S; past it the command goes ahead and requests compute the rest. Another node has its own store: run the command
there, or promote over HTTP.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from scoring.cache import EmbeddingCache
from scoring.embedding_store import EmbeddingStore
from scoring.scorer import VersionScorer
from state.passages import texts_to_warm
from state.registry import Registry
from state.settings import Settings
from state.store import Store

CHUNK = 16  # passages per step of the progress bar


def warm_version(settings: Settings, domain: str, name: str,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Any] | None:
    """Embed the domain's passages with the version when it is a bi-encoder and the node has a store. The
    warm report (as the HTTP promote's `warm`), or None when there was nothing to embed ahead."""
    version_dir = Registry(settings.registry_root).version_dir(domain, name)
    if not settings.embedding_store_mb:
        return None
    store = EmbeddingStore(settings.embedding_store_file, settings.embedding_store_mb << 20)
    try:
        cache = EmbeddingCache(0, store)  # nothing kept in memory: this process ends here
        scorer = VersionScorer(version_dir, threads=settings.pool_threads, max_length=settings.max_length,
                               engine=settings.engine, doc_tokens=settings.doc_tokens,
                               window_overlap=settings.window_overlap, cache=cache)
        if scorer.cache is None:
            return None  # a cross-encoder's input holds the query: nothing to embed ahead
        start = time.monotonic()
        events = Store(settings.database_url)
        try:
            texts = texts_to_warm(events, settings, domain)
        finally:
            events.close()
        done = computed = 0
        while done < len(texts) and time.monotonic() - start < settings.promote_warm_s:
            chunk = texts[done:done + CHUNK]
            computed += scorer.embed(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, len(texts))
        store.flush()
        return {"passages": len(texts), "embedded": done, "computed": computed, "complete": done == len(texts)}
    finally:
        store.close()
