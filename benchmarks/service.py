"""Shared by the HTTP benchmarks: start (or reuse) the service on loopback, publish versions.

Run alone it is the service process itself (`python -m benchmarks.service --port 8123`): Ray with
its own small local cluster, Serve bound to 127.0.0.1, stopped cleanly on SIGTERM.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import httpx

from serving import local
from serving.local import wait_ready

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ADMIN_TOKEN = "bench-admin-token"


def check_loopback(url: str) -> str:
    """Benchmarks only ever target this machine."""
    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise SystemExit(f"refusing non-loopback target {url!r}: benchmarks only run against 127.0.0.1")
    return url.rstrip("/")


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {os.environ.get('RERANKER_ADMIN_TOKEN', ADMIN_TOKEN)}"}


@contextlib.contextmanager
def service(url: str | None, port: int, home: Path | None = None) -> Iterator[str]:
    """Yield the URL of a running service: `url` if given, else one we start and stop (SIGTERM)."""
    if url:
        yield check_loopback(url)
        return
    # BENCH_HOME reuses one registry (and its base-model export) across runs; default: a fresh one.
    home = home or Path(os.environ.get("BENCH_HOME") or tempfile.mkdtemp(prefix="reranker-bench-home-"))
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RERANKER_HOME": str(home), "RERANKER_ADMIN_TOKEN": os.environ.get(
        "RERANKER_ADMIN_TOKEN", ADMIN_TOKEN), "RERANKER_PORT": str(port), "HF_HUB_OFFLINE": "1",
        "RAY_USAGE_STATS_ENABLED": "0", "RERANKER_REGISTRY_CACHE_TTL_S": os.environ.get(
            "RERANKER_REGISTRY_CACHE_TTL_S", "0.5")}
    log = open(home / "service.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.service", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc=proc)
        print(f"service up on {url} (home {home})", flush=True)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_service_args(ap: argparse.ArgumentParser, out: Path, argv: list[str] | None) -> argparse.Namespace:
    """Parse the arguments of a benchmark that runs its own service, adding --port (default: a free
    one), --cache (benchmarks.latency's models) and --out."""
    ap.add_argument("--port", type=int, default=0, help="default: a free port")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "reranker-bench-latency")
    ap.add_argument("--out", type=Path, default=out)
    args = ap.parse_args(argv)
    args.port = args.port or free_port()
    return args


def fresh_home(prefix: str) -> Path:
    """A new RERANKER_HOME; BENCH_BASE_DIR (an exported base version dir) is copied in, so the service
    does not export the base model again."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    if os.environ.get("BENCH_BASE_DIR"):
        import shutil

        base = Path(os.environ["BENCH_BASE_DIR"])
        shutil.copytree(base, home / "models" / "_base" / base.name)
    return home


def publish(url: str, domain: str, version_dir: Path, activate: bool) -> str:
    """Upload a version directory (tar.gz) over the admin API; returns the new version name."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(Path(version_dir).iterdir()):
            if p.is_file():
                tar.add(p, arcname=p.name)
    r = httpx.post(f"{url}/v1/domains/{domain}/versions", params={"activate": str(activate).lower()},
                   content=buf.getvalue(), headers=admin_headers(), timeout=300)
    r.raise_for_status()
    return r.json()["version"]


def promote(url: str, domain: str, version: str) -> dict:
    r = httpx.post(f"{url}/v1/domains/{domain}/promote", json={"version": version}, headers=admin_headers(),
                   timeout=300)
    r.raise_for_status()
    return r.json()


def domain_user(domain: str, split: float = 0.5) -> str:
    """A user key that the sticky A/B assignment puts on the domain arm."""
    from serving.ab import bucket

    return next(f"probe-{i}" for i in range(10_000) if bucket(domain, f"probe-{i}") < split)


def _serve(port: int) -> None:
    from state.settings import Settings

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    try:
        local.start(Settings(), port, num_cpus=int(os.environ.get("BENCH_RAY_CPUS", "4")))
        print("serving", flush=True)
        while not stop:
            time.sleep(0.5)
    finally:
        local.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8123)
    _serve(ap.parse_args().port)


def wait_job(client: httpx.Client, job_id: str, timeout: float = 3600, poll_s: float = 5) -> dict:
    """A job's record once it has ended (GET /v1/jobs/{id}); SystemExit past `timeout`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        rec = client.get(f"/v1/jobs/{job_id}").json()
        if rec["status"] in ("succeeded", "failed", "cancelled"):
            return rec
        time.sleep(poll_s)
    raise SystemExit(f"job {job_id} still {rec['status']} after {timeout} s")
