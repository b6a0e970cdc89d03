"""Headless locust against the service on loopback: RPS, p50/p95/p99 and failures to results/load.json.

    .venv/bin/python -m benchmarks.load                      # starts the service on 127.0.0.1:8123
    .venv/bin/python -m benchmarks.load --url http://127.0.0.1:8000 --users 4 --time 60

Without --url it starts its own service (fresh RERANKER_HOME), publishes the latency benchmark's
ONNX export as the active version of two domains (a third stays on the base model), and stops it.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import service as svc
from benchmarks.results_io import RESULTS, save

LOCUSTFILE = Path(__file__).parent / "locustfile.py"


def prepare_domains(url: str, domains: list[str], version_dir: Path) -> None:
    """All but the last domain get a published, active version; the last serves the base model."""
    for d in domains[:-1]:
        v = svc.publish(url, d, version_dir, activate=True)
        print(f"published {d}@{v}", flush=True)


def run_locust(url: str, users: int, seconds: int, csv_prefix: Path, env: dict | None = None) -> subprocess.Popen:
    """Start headless locust; bounded by -t and by the caller's wait timeout."""
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(users),
           "-r", str(users), "-t", f"{seconds}s", "--host", svc.check_loopback(url), "--csv", str(csv_prefix),
           "--stop-timeout", "10", "--only-summary"]
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=open(f"{csv_prefix}.log", "w"))


def read_stats(csv_prefix: Path) -> dict:
    rows = {r["Name"]: r for r in csv.DictReader(open(f"{csv_prefix}_stats.csv"))}

    def stat(r: dict) -> dict:
        return {"requests": int(r["Request Count"]), "failures": int(r["Failure Count"]),
                "rps": float(r["Requests/s"]), "p50_ms": float(r["50%"]), "p95_ms": float(r["95%"]),
                "p99_ms": float(r["99%"]), "mean_ms": float(r["Average Response Time"])}

    return {name: stat(r) for name, r in rows.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running service on 127.0.0.1; default: start one")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--time", type=int, default=60, help="seconds of load")
    ap.add_argument("--domains", default="scifact,medical,legal")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "reranker-bench-latency")
    ap.add_argument("--out", type=Path, default=RESULTS / "load.json")
    args = ap.parse_args(argv)
    domains = args.domains.split(",")
    from benchmarks.latency import ensure_models

    _, version_dir = ensure_models(args.cache)
    with svc.service(args.url, args.port) as url:
        if not args.url:
            prepare_domains(url, domains, version_dir)
        prefix = Path(tempfile.mkdtemp(prefix="locust-")) / "load"
        proc = run_locust(url, args.users, args.time, prefix, {"BENCH_DOMAINS": args.domains})
        proc.wait(timeout=args.time + 120)
        stats = read_stats(prefix)
    result = {"users": args.users, "seconds": args.time, "domains": domains, "url": url,
              "loadavg_end": os.getloadavg(), "stats": stats}
    agg = stats.get("Aggregated", {})
    print(json.dumps(stats, indent=1))
    print(f"rerank: {stats.get('/rerank', {}).get('rps', 0):.2f} rps, p50 {stats.get('/rerank', {}).get('p50_ms')}"
          f" p95 {stats.get('/rerank', {}).get('p95_ms')} p99 {stats.get('/rerank', {}).get('p99_ms')} ms;"
          f" failures {agg.get('failures')}")
    return save(args.out, result)


if __name__ == "__main__":
    main()
