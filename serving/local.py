"""The app on a private local Ray, bound to loopback: what the tests and benchmarks start.

`start` deploys `serving.app.compose(settings)` in this process; `start_runner` runs what `make serve`
runs (`python -m serving.main` on serve_config.yaml) as a child process with its own local Ray, for
tests and benchmarks that stop it or kill its replicas. `LocalPostgres` is a throwaway PostgreSQL server
(.ci/postgres.sh on a free port) for those that stop and start the database.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


SERVE_CONFIG = Path(__file__).resolve().parents[1] / "serve_config.yaml"


def start_runner(home: Path, port: int, env: dict[str, str] | None = None,
                 pool_replicas: int | None = None) -> subprocess.Popen:
    """`python -m serving.main` on 127.0.0.1:port (serve_config.yaml with the port replaced, as `make
    serve` does), on a new local Ray without dashboard; output in home/serve.log. Not waited for:
    see wait_ready. pool_replicas: a fixed number of pool replicas instead of the shipped autoscaling
    (benchmarks that compare layouts)."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "serve_config.yaml"
    text = re.sub(r"port: 8000\b", f"port: {port}", SERVE_CONFIG.read_text())
    if pool_replicas is not None:
        import yaml  # PyYAML comes with ray[serve]

        doc = yaml.safe_load(text)
        for app in doc["applications"]:
            for dep in app.get("deployments", []):
                if dep["name"] == "RerankerPool":
                    dep.pop("autoscaling_config", None)
                    dep["num_replicas"] = pool_replicas
        text = yaml.safe_dump(doc, sort_keys=False)
    config.write_text(text)
    env = {**os.environ, "RERANKER_HOME": str(home), "RAY_ADDRESS": "local", "HF_HUB_OFFLINE": "1",
           "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    with open(home / "serve.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "serving.main", str(config), "--no-dashboard"], env=env,
                                stdout=log, stderr=subprocess.STDOUT, cwd=SERVE_CONFIG.parent)


def replica_pids(runner_pid: int, deployment: str) -> list[int]:
    """Pids of the deployment's replica processes under one runner (Ray titles them
    `ray::ServeReplica:<app>:<deployment>`); only that runner's descendants, never another Ray's."""
    import psutil

    out = []
    for p in psutil.Process(runner_pid).children(recursive=True):
        try:
            if f"ServeReplica:{APP_NAME}:{deployment}" in " ".join(p.cmdline()):
                out.append(p.pid)
        except psutil.Error:
            pass
    return out


class LocalPostgres:
    """A PostgreSQL server of one's own on loopback (.ci/postgres.sh with its own port and directory), to
    stop and start at will without disturbing another user of the CI server. `url` once started."""

    SCRIPT = SERVE_CONFIG.parent / ".ci" / "postgres.sh"

    def __init__(self, port: int, db: str = "reranker"):
        self.env = {"PG_PORT": str(port), "PG_DIR": str(Path(tempfile.gettempdir()) / f"reranker-pg-{port}-{os.getpid()}"), "PG_DB": db}
        self.url = ""

    def _run(self, *args: str) -> str:
        out = subprocess.run(["bash", str(self.SCRIPT), *args], env={**os.environ, **self.env},
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"postgres.sh {' '.join(args)} failed: {out.stderr[-2000:]}")
        return out.stdout.strip()

    def start(self) -> str:
        self.url = self._run()
        return self.url

    def stop(self) -> None:
        self._run("stop")

    def remove(self) -> None:
        """Stop it and delete its files."""
        try:
            self.stop()
        finally:
            subprocess.run(["rm", "-rf", self.env["PG_DIR"]], check=False)
