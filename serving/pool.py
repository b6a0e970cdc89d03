"""The model pool: a Ray Serve deployment holding the base model plus an LRU of domain versions,
and `PoolClient`, the ingress' handle on it.

Serve's model multiplexing keys the LRU by "domain@vN": a promote changes the id the ingress asks
for, so the new version loads on first use and the old one ages out (Serve has no reload API).
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ray import serve
from ray.exceptions import RayTaskError
from ray.serve.handle import DeploymentHandle

from scoring.cache import EmbeddingCache
from scoring.scorer import Scored, VersionScorer
from state.ids import BASE_MODEL_ID, split_model_id
from state.registry import Registry
from state.settings import Settings

log = logging.getLogger("ray.serve")


class ModelLoadError(RuntimeError):
    pass


class PoolCore:
    """Everything the deployment does, minus Ray: load versions (marking failures), score."""

    def __init__(self, settings: Settings, base_dir: Path | str):
        self.settings = settings
        self.registry = Registry(settings.registry_root)
        self.cache = EmbeddingCache(settings.embedding_cache_mb << 20) if settings.embedding_cache_mb else None
        self.base = self._open(base_dir)

    def _open(self, version_dir: Path | str) -> VersionScorer:
        s = self.settings
        return VersionScorer(version_dir, threads=s.intra_op_threads, max_length=s.max_length,
                             batch_size=s.batch_size, engine=s.engine, doc_tokens=s.doc_tokens,
                             window_overlap=s.window_overlap, window_aggregate=s.window_aggregate, cache=self.cache)

    def load(self, model_id: str) -> VersionScorer:
        domain, version = split_model_id(model_id)
        try:
            self.registry.verify(domain, version)
            return self._open(self.registry.version_dir(domain, version))
        except Exception as e:  # noqa: BLE001 - whatever broke, this version must not serve again
            log.error("loading %s failed: %s", model_id, e)
            self.registry.mark_failed(domain, version, f"load failed: {e}")
            raise ModelLoadError(f"{model_id} failed to load: {e}") from e


def pool_deployment(settings: Settings):
    """Built per settings because max_num_models_per_replica is fixed when the class is decorated."""

    @serve.deployment(name="RerankerPool", num_replicas=settings.pool_replicas,
                      ray_actor_options={"num_cpus": settings.pool_num_cpus},
                      max_ongoing_requests=settings.pool_max_ongoing_requests)
    class RerankerPool:
        def __init__(self, settings: Settings, base_dir: str):
            self.core = PoolCore(settings, base_dir)

        @serve.multiplexed(max_num_models_per_replica=settings.max_models_per_replica)
        async def get_model(self, model_id: str) -> VersionScorer:
            return await asyncio.to_thread(self.core.load, model_id)

        async def warm(self) -> None:
            """Load the request's model id into this replica's LRU and score once (the load check)."""
            model = await self.get_model(serve.get_multiplexed_model_id())
            await asyncio.to_thread(model.score, "check", ["check"])

        async def score(self, query: str, documents: list[str], max_tokens_per_doc: int | None) -> Scored:
            model_id = serve.get_multiplexed_model_id()
            model = self.core.base if model_id in ("", BASE_MODEL_ID) else await self.get_model(model_id)
            return await asyncio.to_thread(model.score, query, documents, max_tokens_per_doc)

    return RerankerPool


class PoolClient:
    """The ingress' Scorer: scores through the pool deployment; the model id picks the multiplexed
    replica and model."""

    def __init__(self, handle: DeploymentHandle):
        self.handle = handle

    def _for(self, model_id: str) -> DeploymentHandle:
        return self.handle if model_id == BASE_MODEL_ID else self.handle.options(multiplexed_model_id=model_id)

    async def score(self, model_id: str, query: str, documents: list[str],
                    max_tokens_per_doc: int | None = None) -> Scored:
        return await self._for(model_id).score.remote(query, documents, max_tokens_per_doc)

    async def warm(self, model_id: str) -> None:
        """Load a version into the pool before it is promoted; raises ModelLoadError saying why not."""
        try:
            await self._for(model_id).warm.remote()
        except RayTaskError as e:  # keep the replica's message, not Ray's traceback
            raise ModelLoadError(str(e.cause) if e.cause is not None else str(e)) from None
