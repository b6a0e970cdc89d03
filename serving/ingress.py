"""The HTTP entry point: a FastAPI app (built per replica) on a Ray Serve deployment.

Routes live in serving/routes/; `create_app` also runs without Ray (tests with a fake scorer,
benchmarks), given any `Scorer`.
"""
from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Depends, FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from serving import autopilot, drain, errors, events, unicode_guard
from serving.pool import PoolClient
from serving.rerank_service import RerankService, Scorer
from serving.routes import (admin, catalog, challenge, feedback, jobs, labels, models, passages, rerank, tei,
                            traffic, uploads)
from state.registry import Registry
from state.settings import Settings


def create_app(settings: Settings, scorer: Scorer) -> FastAPI:
    # App-wide dependencies apply to every route, those of later routers too.
    app = FastAPI(title="Domain reranker", version="0.1.0",
                  description="Cohere-compatible rerank with per-domain fine-tuned models and A/B routing.",
                  dependencies=[Depends(unicode_guard.reject_lone_surrogates)])
    registry = Registry(settings.registry_root)
    app.state.settings = settings
    app.state.registry = registry
    logger = events.install(app, settings)  # app.state.store / app.state.events, drained on shutdown
    app.state.service = RerankService(registry, scorer, settings, events=logger)
    autopilot.install(app, settings)  # app.state.autopilot: decisions and automatic training on a timer
    errors.install(app)
    app.add_middleware(errors.BodyLimit, max_bytes=settings.max_body_bytes,
                       upload_max_bytes=settings.max_upload_bytes,
                       more_limits={"/uploads": settings.max_data_upload_bytes,
                                    "/passages": settings.max_data_upload_bytes})
    for r in (rerank.router, catalog.router, tei.router, models.router, feedback.router, jobs.router):
        app.include_router(r)
    for r in (traffic.router, labels.router, uploads.router, passages.router, challenge.router):
        app.include_router(r)
    admin.install(app)
    errors.document(app)  # lazy: the spec is built on first request, from every route by then
    rerank.declare_limits(app, settings)
    app.state.drain = drain.Drain(settings.retry_after_s)
    app.add_middleware(drain.DrainMiddleware, drain=app.state.drain)  # added last: runs first
    return app


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    def __init__(self, settings: Settings, pool: DeploymentHandle):
        self.settings, self.pool = settings, pool

    def __serve_build_asgi_app__(self) -> Any:
        app = create_app(self.settings, PoolClient(self.pool, self.settings.retry_after_s))

        async def _follow() -> None:  # a task: it waits for the runner's stop signal (serving/drain.py)
            app.state.drain_follower = asyncio.get_running_loop().create_task(drain.follow_switch(app.state.drain))

        app.router.on_startup.append(_follow)
        return app
