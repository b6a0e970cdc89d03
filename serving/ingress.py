"""The HTTP entry point: a FastAPI app (built per replica) on a Ray Serve deployment.

Routes live in serving/routes/; the app factory also runs without Ray (tests, benchmarks).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from serving import errors, events
from serving.rerank_service import RerankService, Scorer
from serving.routes import feedback, jobs, models, rerank
from state.ids import BASE_MODEL_ID
from state.registry import Registry
from state.settings import Settings, get_settings


def create_app(settings: Settings, scorer: Scorer) -> FastAPI:
    app = FastAPI(title="Domain reranker", version="0.1.0",
                  description="Cohere-compatible rerank with per-domain fine-tuned models and A/B routing.")
    registry = Registry(settings.registry_root)
    app.state.settings = settings
    app.state.registry = registry
    app.state.service = RerankService(registry, scorer, max_documents=settings.max_documents,
                                      default_split=settings.ab_split, cache_ttl=settings.registry_cache_ttl_s)
    errors.install(app)
    app.add_middleware(errors.BodyLimit, max_bytes=settings.max_body_bytes,
                       upload_max_bytes=settings.max_upload_bytes)
    events.install(app, settings)  # app.state.store / app.state.events, drained on shutdown
    app.state.service.events = app.state.events
    for r in (rerank.router, models.router, feedback.router, jobs.router):
        app.include_router(r)
    return app


class PoolScorer:
    """Scores through the pool deployment; the model id picks the multiplexed replica/model."""

    def __init__(self, handle: DeploymentHandle):
        self.handle = handle

    async def score(self, model_id: str, query: str, documents: list[str]) -> tuple[np.ndarray, int]:
        h = self.handle if model_id == BASE_MODEL_ID else self.handle.options(multiplexed_model_id=model_id)
        return await h.score.remote(query, documents)


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    def __init__(self, pool: DeploymentHandle):
        self.pool = pool

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(get_settings(), PoolScorer(self.pool))
