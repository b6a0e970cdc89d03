"""The HTTP entry point: a FastAPI app (built per replica) on a Ray Serve deployment.

Routes live in serving/routes/; `create_app` also runs without Ray (tests with a fake scorer,
benchmarks), given any `Scorer`.
"""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from serving import errors, events
from serving.pool import PoolClient
from serving.rerank_service import RerankService, Scorer
from serving.routes import feedback, jobs, models, rerank
from state.registry import Registry
from state.settings import Settings


def create_app(settings: Settings, scorer: Scorer) -> FastAPI:
    app = FastAPI(title="Domain reranker", version="0.1.0",
                  description="Cohere-compatible rerank with per-domain fine-tuned models and A/B routing.")
    registry = Registry(settings.registry_root)
    app.state.settings = settings
    app.state.registry = registry
    logger = events.install(app, settings)  # app.state.store / app.state.events, drained on shutdown
    app.state.service = RerankService(registry, scorer, settings, events=logger)
    errors.install(app)
    app.add_middleware(errors.BodyLimit, max_bytes=settings.max_body_bytes,
                       upload_max_bytes=settings.max_upload_bytes)
    for r in (rerank.router, models.router, feedback.router, jobs.router):
        app.include_router(r)
    return app


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    def __init__(self, settings: Settings, pool: DeploymentHandle):
        self.settings, self.pool = settings, pool

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.settings, PoolClient(self.pool))
