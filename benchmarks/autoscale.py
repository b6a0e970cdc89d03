"""Pool autoscaling on a two-node Ray cluster: replicas added under load and removed after it stops.

    .venv/bin/python -m benchmarks.autoscale                     # ~3-4 min; results/autoscale.json
    .venv/bin/python -m benchmarks.autoscale --users 8 --load-s 60 --worker-cpus 2

Starts the two-node cluster of serving/local_cluster.py (a head with no CPUs, and a worker with
`--worker-cpus` CPUs and `reranker_pool: 4`). Deploys deploy/serve_cluster.yaml with the autoscaling
config that serve_config.yaml ships, and pool replicas at 0.5 CPU. Then it runs three phases:
- idle (`--idle-s`);
- `--users` closed-loop clients sending SciFact rerank requests (20-50 passages) for `--load-s`;
- idle again until the pool is back at min_replicas, or `--cooldown-s` at most.
Every second it records the pool's RUNNING replicas, as Serve's controller reports them on the
dashboard's REST API. Requests go to 127.0.0.1 only. It stops only the processes it started.
`BENCH_HOME=dir` reuses a registry that already holds the base model export; otherwise the first deploy
builds it (about a minute).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

from benchmarks.data import scifact_requests
from benchmarks.results_io import RESULTS, save
from benchmarks.service import check_loopback
from serving.local import wait_ready
from serving.local_cluster import LocalCluster, cluster_config, free_port


def pool_replicas(cluster: LocalCluster) -> dict[str, int]:
    """The pool's replicas by state (RUNNING, STARTING, PENDING_ALLOCATION, STOPPING, ...)."""
    apps = cluster.api("/api/serve/applications/")["applications"]
    dep = apps["reranker"]["deployments"]["RerankerPool"]
    states: dict[str, int] = {}
    for r in dep.get("replicas", []):
        states[r["state"]] = states.get(r["state"], 0) + 1
    return states


class Load:
    """Closed-loop clients: each sends its next request when the last one is answered."""

    def __init__(self, url: str, users: int, bodies: list[dict]):
        self.url, self.users, self.bodies = check_loopback(url), users, bodies
        self.stop = threading.Event()
        self.done: list[tuple[float, float, int]] = []  # (finish time, latency s, status)
        self.lock = threading.Lock()

    def _user(self, i: int) -> None:
        with httpx.Client(timeout=120) as c:
            n = i
            while not self.stop.is_set():
                body = self.bodies[n % len(self.bodies)]
                n += self.users
                t = time.perf_counter()
                try:
                    status = c.post(f"{self.url}/rerank?domain=bench-autoscale", json=body).status_code
                except httpx.HTTPError:
                    status = 0
                with self.lock:
                    self.done.append((time.time(), time.perf_counter() - t, status))

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._user, args=(i,), daemon=True) for i in range(self.users)]
        for t in threads:
            t.start()
        return threads


def sample(cluster: LocalCluster, t0: float, phase: str, load: Load | None) -> dict:
    states = pool_replicas(cluster)
    row = {"t_s": round(time.time() - t0, 1), "phase": phase, "running": states.get("RUNNING", 0),
           "states": states}
    if load is not None:
        with load.lock:
            recent = [d for d in load.done if d[0] >= time.time() - 5]
        row["rps_5s"] = round(len(recent) / 5, 2)
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--idle-s", type=int, default=10)
    ap.add_argument("--load-s", type=int, default=60)
    ap.add_argument("--cooldown-s", type=int, default=120)
    ap.add_argument("--worker-cpus", type=int, default=2)
    ap.add_argument("--requests", type=int, default=64, help="distinct SciFact request bodies")
    ap.add_argument("--out", type=Path, default=RESULTS / "autoscale.json")
    a = ap.parse_args(argv)

    # SIGTERM (or SIGINT, which a background job ignores) still stops the cluster in `finally`
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    home = Path(os.environ.get("BENCH_HOME") or tempfile.mkdtemp(prefix="reranker-bench-home-"))
    bodies = scifact_requests(a.requests)
    cluster = LocalCluster(worker_cpus=a.worker_cpus)
    timeline: list[dict] = []
    load: Load | None = None
    try:
        cluster.start()
        port = free_port()
        config = cluster.temp_dir / "serve.yaml"
        cfg = cluster_config(port, {"RERANKER_HOME": str(home), "RERANKER_POOL_NUM_CPUS": "0.5"})
        config.write_text(yaml.safe_dump(cfg))
        autoscaling = next(d for d in cfg["applications"][0]["deployments"]
                           if d["name"] == "RerankerPool")["autoscaling_config"]
        cluster.serve_deploy(config)
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, timeout_s=600)
        print(f"cluster up, serving on {url}; autoscaling {autoscaling}", flush=True)

        t0 = time.time()
        phases = []

        def run_phase(name: str, seconds: float, until=None) -> None:
            start = time.time()
            phases.append({"phase": name, "start_s": round(start - t0, 1)})
            while time.time() - start < seconds:
                row = sample(cluster, t0, name, load)
                timeline.append(row)
                print(json.dumps(row), flush=True)
                if until is not None and until(row):
                    break
                time.sleep(1)
            phases[-1]["end_s"] = round(time.time() - t0, 1)

        run_phase("idle", a.idle_s)
        load = Load(url, a.users, bodies)
        threads = load.start()
        run_phase("load", a.load_s)
        load.stop.set()
        for t in threads:
            t.join(timeout=150)
        run_phase("cooldown", a.cooldown_s,
                  until=lambda r: r["running"] <= autoscaling["min_replicas"] and set(r["states"]) == {"RUNNING"})

        placed = {x["node_id"] for x in cluster.actors("ServeReplica:reranker:RerankerPool")}
        lat = [d[1] * 1000 for d in load.done if d[2] == 200]
        load_rows = [r for r in timeline if r["phase"] == "load"]
        cool_rows = [r for r in timeline if r["phase"] == "cooldown"]
        first_up = next((r["t_s"] for r in load_rows if r["running"] > autoscaling["min_replicas"]), None)
        back_down = next((r["t_s"] for r in cool_rows if r["running"] <= autoscaling["min_replicas"]), None)
        result = {
            "what": "RerankerPool replicas (Serve autoscaling) on a two-node local Ray cluster under closed-loop load",
            "autoscaling_config": autoscaling, "users": a.users, "worker_cpus": a.worker_cpus,
            "pool_num_cpus": 0.5, "phases": phases,
            "replicas": {"idle": max((r["running"] for r in timeline if r["phase"] == "idle"), default=0),
                         "max_under_load": max((r["running"] for r in load_rows), default=0),
                         "first_scale_up_s_after_load_start": None if first_up is None else
                         round(first_up - phases[1]["start_s"], 1),
                         "back_to_min_s_after_load_end": None if back_down is None else
                         round(back_down - phases[1]["end_s"], 1),
                         "at_end": timeline[-1]["running"] if timeline else 0},
            "pool_nodes": len(placed), "pool_on_worker_only": placed == {cluster.node_with("reranker_pool")},
            "requests": {"ok": len(lat), "failed": sum(1 for d in load.done if d[2] != 200),
                         "p50_ms": round(statistics.median(lat), 1) if lat else None,
                         "p95_ms": round(statistics.quantiles(lat, n=20)[18], 1) if len(lat) >= 20 else None},
            "load_average_at_end": os.getloadavg(),
            "timeline": timeline,
        }
    finally:
        if load is not None:
            load.stop.set()
        print(f"stopped {cluster.stop()} cluster processes", flush=True)
        cluster.remove_files()
    r = result["replicas"]
    print(f"pool replicas: idle {r['idle']}, max under load {r['max_under_load']} (first added "
          f"{r['first_scale_up_s_after_load_start']} s after load began), back to min "
          f"{r['back_to_min_s_after_load_end']} s after it stopped; requests {result['requests']}")
    return save(a.out, result)


if __name__ == "__main__":
    main()
