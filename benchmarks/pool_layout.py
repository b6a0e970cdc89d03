"""Pool layouts side by side: 1 replica x 2 threads, 2 replicas x 1 thread and 2 replicas x 2 threads (two
replicas: no single point of failure). Per layout, its own service (`python -m serving.main`), then
locust with no pause (throughput and latency at saturation) and with the default 0.2-1 s pause,
and the pool replicas' memory. Results in results/pool_layout.json.

    nice -n 10 .venv/bin/python -m benchmarks.pool_layout [--seconds 60 --users 4]
"""
from __future__ import annotations

import argparse
import os
import signal
import tempfile
from pathlib import Path

from benchmarks import service as svc
from benchmarks.load import prepare_domains, read_stats, run_locust
from benchmarks.results_io import RESULTS, save

# replicas x threads per replica; the shipped serve_config.yaml autoscales the replicas, so each layout
# runs with a fixed number instead
LAYOUTS = {"1x2": (1, 2), "2x1": (2, 1), "2x2": (2, 2)}


def pool_memory_mb(runner_pid: int) -> dict:
    """RSS and USS (memory only that process holds) of each pool replica, MB."""
    import psutil

    from serving.local import replica_pids

    out = []
    for pid in replica_pids(runner_pid, "RerankerPool"):
        info = psutil.Process(pid).memory_full_info()
        out.append({"rss": round(info.rss / 2**20), "uss": round(info.uss / 2**20)})
    return {"replicas": out, "rss_total": sum(r["rss"] for r in out), "uss_total": sum(r["uss"] for r in out)}


def run_layout(name: str, args, version_dir: Path) -> dict:
    from serving import local

    replicas, threads = LAYOUTS[name]
    home = svc.fresh_home(f"reranker-layout-{name}-")
    proc = local.start_runner(home, args.port, pool_replicas=replicas, env={
        "RERANKER_POOL_REPLICAS": str(replicas), "RERANKER_POOL_THREADS": str(threads),
        "RERANKER_ADMIN_TOKEN": svc.admin_headers()["Authorization"].removeprefix("Bearer ")})
    url = f"http://127.0.0.1:{args.port}"
    out: dict = {"replicas": replicas, "threads": threads}
    try:
        local.wait_ready(url, timeout_s=900, proc=proc)
        domains = args.domains.split(",")
        prepare_domains(url, domains, version_dir)
        tmp = Path(tempfile.mkdtemp(prefix="locust-layout-"))
        for label, rate in (("saturation", "max"), ("paced", "")):
            p = run_locust(url, args.users, args.seconds, tmp / label,
                           {"BENCH_DOMAINS": args.domains, "BENCH_RPS_PER_USER": rate})
            p.wait(timeout=args.seconds + 300)
            out[label] = read_stats(tmp / label)["/rerank"]
            print(f"{name} {label}: {out[label]}", flush=True)
        out["memory_mb"] = pool_memory_mb(proc.pid)
        if len(out["memory_mb"]["replicas"]) != replicas:  # the layout did not take: the figures mean nothing
            raise RuntimeError(f"{name}: {len(out['memory_mb']['replicas'])} pool replicas running, not {replicas}")
        print(f"{name} memory: {out['memory_mb']}", flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--domains", default="scifact,legal")
    ap.add_argument("--layouts", default="1x2,2x1,2x2")
    args = svc.own_service_args(ap, RESULTS / "pool_layout.json", argv)
    from benchmarks.latency import ensure_models

    _, version_dir = ensure_models(args.cache)
    result = {"users": args.users, "seconds": args.seconds, "loadavg_start": os.getloadavg(), "layouts": {}}
    for name in args.layouts.split(","):
        result["layouts"][name] = run_layout(name, args, version_dir)
    result["loadavg_end"] = os.getloadavg()
    return save(args.out, result)


if __name__ == "__main__":
    main()
