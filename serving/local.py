"""The app on a private local Ray, bound to loopback: what the tests and benchmarks start.

`make serve` uses `serve run serve_config.yaml` instead; both deploy `serving.app.compose(settings)`.
"""
from __future__ import annotations

import subprocess
import time

import httpx

from serving.app import compose
from state.settings import Settings

APP_NAME = "reranker"


def deploy(settings: Settings) -> None:
    from ray import serve

    serve.run(compose(settings), name=APP_NAME, route_prefix="/", blocking=False)


def start(settings: Settings, port: int, num_cpus: int = 4) -> str:
    """Start Ray + Serve on 127.0.0.1:port, deploy, wait until ready; returns the base URL."""
    import ray
    from ray import serve

    ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    deploy(settings)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    return url


def stop() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def wait_ready(url: str, timeout_s: float = 600, proc: subprocess.Popen | None = None) -> None:
    """Until GET /readyz answers 200 (the base model scores); fails early if `proc` exits."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/readyz", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not ready in {timeout_s} s")
