"""Composition of the Serve application; serve_config.yaml imports `build_app`.

Settings are read once here and handed to the deployments through `bind()`.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ray.serve import Application

from scoring.files import MANIFEST
from serving.ingress import Ingress
from serving.pool import pool_deployment
from state.registry import Registry
from state.settings import Settings


def base_dir(settings: Settings, model: str | None = None) -> Path:
    """The base model's version dir (or another base's: the multilingual one), exported on first start by
    `python -m exporters.base_model`.

    A child process keeps torch (needed only for the export) out of the serving processes; when the
    dir exists (every later start) nothing is spawned, which keeps start-up fast.
    """
    model = model or settings.base_model
    built = Registry(settings.registry_root).base_dir(model, settings.max_length, settings.builds_openvino)
    if (built / MANIFEST).is_file():
        return built
    # stderr passes through: the first start shows the export's progress in the serve log
    out = subprocess.run([sys.executable, "-m", "exporters.base_model", model], check=True, stdout=subprocess.PIPE,
                         text=True, env={**os.environ, **settings.to_env(), "HF_HUB_OFFLINE": "1"})
    return Path(out.stdout.strip().splitlines()[-1])


def build_app(args: dict) -> Application:
    """What `serve run serve_config.yaml` calls (Serve passes the YAML's args): settings from RERANKER_*."""
    return compose(Settings())


def compose(settings: Settings) -> Application:
    settings.home.mkdir(parents=True, exist_ok=True)
    runtime_env = {"env_vars": {"HF_HUB_OFFLINE": "1"}}
    pool = pool_deployment(settings).options(ray_actor_options=actor_options(
        settings.pool_num_cpus, settings.pool_resources, runtime_env)).bind(
            settings, str(base_dir(settings)),
            str(base_dir(settings, settings.multilingual_base)) if settings.multilingual_base else None)
    # Beyond max_queued_requests waiting at the HTTP proxy, Serve itself answers 503 + Retry-After.
    return Ingress.options(num_replicas=settings.ingress_replicas,
                           max_ongoing_requests=settings.ingress_max_ongoing_requests,
                           max_queued_requests=settings.ingress_max_queued_requests,
                           backpressure_config={"retry_after_s": settings.retry_after_s},
                           ray_actor_options=actor_options(0, settings.ingress_resources, runtime_env)
                           ).bind(settings, pool)


def actor_options(num_cpus: float, resources: dict[str, float], runtime_env: dict) -> dict:
    """A deployment's ray_actor_options; custom resources (RERANKER_POOL_RESOURCES, ...) pin it to the
    cluster nodes started with them."""
    options = {"num_cpus": num_cpus, "runtime_env": runtime_env}
    if resources:
        options["resources"] = dict(resources)
    return options
