"""Composition of the Serve application; serve_config.yaml imports `build_app`."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from ray.serve import Application

from serving.ingress import Ingress
from serving.pool import pool_deployment
from state.registry import Registry
from state.settings import get_settings


def base_dir(settings: Any) -> str:
    """The base model's version dir, exported on first start by a child process.

    A subprocess keeps torch (needed only for the export) out of the serving processes.
    """
    cmd = [sys.executable, "-m", "exporters.base_model"]
    # stderr passes through: the first start shows the export's progress in the serve log
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return out.stdout.strip().splitlines()[-1]


def replica_env(settings: Any) -> dict[str, str]:
    """Replicas see the same settings as this process (absolute home: their cwd may differ)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("RERANKER_")}
    env["RERANKER_HOME"] = str(settings.home.resolve())
    env["HF_HUB_OFFLINE"] = os.environ.get("HF_HUB_OFFLINE", "1")
    return env


def build_app(args: dict | None = None) -> Application:
    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    Registry(settings.registry_root)
    base = base_dir(settings)
    runtime_env = {"env_vars": replica_env(settings)}
    pool = pool_deployment(settings).options(
        ray_actor_options={"num_cpus": settings.pool_num_cpus, "runtime_env": runtime_env}).bind(base)
    return Ingress.options(num_replicas=settings.ingress_replicas,
                           ray_actor_options={"num_cpus": 0, "runtime_env": runtime_env}).bind(pool)
