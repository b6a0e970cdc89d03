"""The model pool: a Ray Serve deployment holding the base model plus an LRU of domain versions,
and `PoolClient`, the ingress' handle on it.

Serve's model multiplexing keys the LRU by "domain@vN": a promote changes the id the ingress asks
for, so the new version loads on first use and the old one ages out (Serve has no reload API).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Callable

from ray import serve
from ray.exceptions import OutOfMemoryError, RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from scoring.cache import EmbeddingCache
from scoring.embedding_store import EmbeddingStore
from scoring.fusion import LocalLexical
from scoring.scorer import Scored, Stopped, TooManyTokens, VersionScorer
from serving import overload
from state.ids import BASE_MODEL_ID, MULTILINGUAL_BASE_ID, split_model_id
from state.registry import Registry
from state.settings import Settings

log = logging.getLogger("ray.serve")


class ModelLoadError(RuntimeError):
    pass


class PoolCore:
    """Everything the deployment does, minus Ray: load versions (marking failures), score."""

    def __init__(self, settings: Settings, base_dir: Path | str, multilingual_dir: Path | str | None = None):
        self.settings = settings
        self.registry = Registry(settings.registry_root)
        self.cache = _embedding_cache(settings)
        # the base fuses BM25 over the request's own documents; domain versions bring their own statistics
        self.base = self._open(base_dir, LocalLexical(**settings.base_lexical()))
        # base routing's second base (serving/base_routing.py), with its own request-local fusion weights
        self.bases = {"": self.base, BASE_MODEL_ID: self.base}
        if multilingual_dir is not None:
            self.bases[MULTILINGUAL_BASE_ID] = self._open(
                multilingual_dir, LocalLexical(**settings.multilingual_base_lexical()))
            self.bases[MULTILINGUAL_BASE_ID].label = MULTILINGUAL_BASE_ID

    def _open(self, version_dir: Path | str, local_lexical: LocalLexical | None = None) -> VersionScorer:
        s = self.settings
        return VersionScorer(version_dir, threads=s.pool_threads, max_length=s.max_length,
                             batch_size=s.batch_size, engine=s.engine, doc_tokens=s.doc_tokens,
                             window_overlap=s.window_overlap, window_aggregate=s.window_aggregate, cache=self.cache,
                             local_lexical=local_lexical)

    def load(self, model_id: str) -> VersionScorer:
        domain, version = split_model_id(model_id)
        try:
            self.registry.verify(domain, version)
            return self._open(self.registry.version_dir(domain, version))
        except Exception as e:  # noqa: BLE001 - whatever broke, this version must not serve again
            log.error("loading %s failed: %s", model_id, e)
            self.registry.mark_failed(domain, version, f"load failed: {e}")
            raise ModelLoadError(f"{model_id} failed to load: {e}") from e

    def score(self, model: VersionScorer, query: str, documents: list[str], max_tokens_per_doc: int | None,
              truncate: bool = False, stop: Callable[[], bool] | None = None) -> Scored:
        """Within the per-request token bound (TooManyTokens before any inference)."""
        return model.score(query, documents, max_tokens_per_doc, truncate,
                           max_total_tokens=self.settings.max_request_tokens, stop=stop)


def _embedding_cache(settings: Settings) -> EmbeddingCache | None:
    """The replica's LRU, in front of the node's store; a store that cannot be opened leaves the LRU alone
    (logged): serving never depends on it."""
    store = None
    if settings.embedding_store_mb:
        try:
            store = EmbeddingStore(settings.embedding_store_file, settings.embedding_store_mb << 20)
        except Exception as e:  # noqa: BLE001 - a replica serves without its store rather than not at all
            log.error("embedding store %s not opened: %s", settings.embedding_store_file, e)
    if not (settings.embedding_cache_mb or store):
        return None
    return EmbeddingCache(settings.embedding_cache_mb << 20, store)


def stopper(budget_s: float | None) -> tuple[Callable[[], bool], threading.Event]:
    """(stop, cancelled): stop() is True once the request's time is up or `cancelled` is set."""
    cancelled = threading.Event()
    end = None if budget_s is None else time.monotonic() + budget_s
    return (lambda: cancelled.is_set() or (end is not None and time.monotonic() > end)), cancelled


def pool_deployment(settings: Settings):
    """Built per settings because max_num_models_per_replica is fixed when the class is decorated."""

    @serve.deployment(name="RerankerPool", num_replicas=settings.pool_replicas,
                      ray_actor_options={"num_cpus": settings.pool_num_cpus},
                      max_ongoing_requests=settings.pool_max_ongoing_requests,
                      max_queued_requests=settings.pool_max_queued_requests)
    class RerankerPool:
        def __init__(self, settings: Settings, base_dir: str, multilingual_dir: str | None = None):
            self.core = PoolCore(settings, base_dir, multilingual_dir)

        @serve.multiplexed(max_num_models_per_replica=settings.max_models_per_replica)
        async def get_model(self, model_id: str) -> VersionScorer:
            return await asyncio.to_thread(self.core.load, model_id)

        async def warm(self) -> None:
            """Load the request's model id into this replica's LRU and score once (the load check)."""
            model = await self.get_model(serve.get_multiplexed_model_id())
            await asyncio.to_thread(model.score, "check", ["check"])

        async def embed(self, documents: list[str]) -> int:
            """Embed passages with the request's model id into the store; how many were computed."""
            model = await self._model(serve.get_multiplexed_model_id())
            return await asyncio.to_thread(model.embed, documents)

        async def _model(self, model_id: str) -> VersionScorer:
            base = self.core.bases.get(model_id)
            return base if base is not None else await self.get_model(model_id)

        async def score(self, query: str, documents: list[str], max_tokens_per_doc: int | None,
                        truncate: bool = False, budget_s: float | None = None) -> Scored:
            """budget_s: the caller's time left; scoring stops between batches when it runs out or
            the caller cancels (the thread cannot be interrupted mid-batch)."""
            model = await self._model(serve.get_multiplexed_model_id())
            stop, cancelled = stopper(budget_s)
            try:
                return await asyncio.to_thread(self.core.score, model, query, documents, max_tokens_per_doc,
                                               truncate, stop)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    return RerankerPool


class PoolClient:
    """The ingress' Scorer: scores through the pool deployment; the model id picks the multiplexed
    replica and model.

    A request whose replica dies under it is sent once more (Serve's router has dropped the dead
    replica, so it goes to another); a full queue (max_queued_requests) or a second loss is
    `Unavailable` (503 + Retry-After). The request's deadline travels with it (serving/overload.py)."""

    # the replica died or is unreachable, or Ray's memory monitor killed it under this request
    REPLICA_LOST = (RayActorError, OutOfMemoryError)

    def __init__(self, handle: DeploymentHandle, retry_after_s: int = 1):
        self.handle, self.retry_after_s = handle, retry_after_s

    def _for(self, model_id: str) -> DeploymentHandle:
        return self.handle if model_id == BASE_MODEL_ID else self.handle.options(multiplexed_model_id=model_id)

    async def score(self, model_id: str, query: str, documents: list[str],
                    max_tokens_per_doc: int | None = None, truncate: bool = False) -> Scored:
        h = self._for(model_id)
        for attempt in (1, 2):
            try:
                return await self._call(h, query, documents, max_tokens_per_doc, truncate)
            except self.REPLICA_LOST as e:
                if attempt == 2:
                    raise overload.Unavailable(f"server: two pool replicas lost under this request "
                                               f"({type(e).__name__})", self.retry_after_s) from e
                log.warning("pool replica lost under a request (%s): retrying once on another", type(e).__name__)
            except BackPressureError as e:
                raise overload.Unavailable(f"server: overloaded, {e}", self.retry_after_s) from None
            except RayTaskError as e:  # the replica raised: re-raise what it raised, without Ray's wrapper
                if isinstance(e.cause, Stopped):
                    raise overload.Unavailable("server: request deadline passed while scoring",
                                               self.retry_after_s) from None
                if isinstance(e.cause, TooManyTokens):
                    raise TooManyTokens(*e.cause.args) from None
                raise
        raise AssertionError("unreachable")

    @staticmethod
    async def _call(h: DeploymentHandle, query: str, documents: list[str], max_tokens_per_doc: int | None,
                    truncate: bool) -> Scored:
        response = h.score.remote(query, documents, max_tokens_per_doc, truncate, overload.remaining())
        try:
            return await response
        except asyncio.CancelledError:
            response.cancel()  # the deadline passed or the client left: the replica stops scoring too
            raise

    async def embed(self, model_id: str, documents: list[str]) -> int:
        """Passage embeddings into the node's store ahead of requests; how many were computed."""
        return await self._for(model_id).embed.remote(documents)

    async def warm(self, model_id: str) -> None:
        """Load a version into the pool before it is promoted; raises ModelLoadError saying why not."""
        try:
            await self._for(model_id).warm.remote()
        except RayTaskError as e:  # keep the replica's message, not Ray's traceback
            raise ModelLoadError(str(e.cause) if e.cause is not None else str(e)) from None
