"""The same rerank request in-process (VersionScorer.score) and through HTTP + Ray Serve; the added ms.

Both sides score the same version directory with the service's thread count; requests alternate.

    .venv/bin/python -m benchmarks.overhead                  # starts the service on 127.0.0.1:8123
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks import service as svc
from benchmarks.results_io import RESULTS, save


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running service on 127.0.0.1; default: start one")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--domain", default="scifact")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "reranker-bench-latency")
    ap.add_argument("--out", type=Path, default=RESULTS / "overhead.json")
    args = ap.parse_args(argv)
    from benchmarks.data import scifact_requests
    from benchmarks.latency import ensure_models
    from scoring.scorer import VersionScorer
    from state.settings import Settings

    _, version_dir = ensure_models(args.cache)
    s = Settings()
    local = VersionScorer(version_dir, threads=s.intra_op_threads, max_length=s.max_length, batch_size=s.batch_size,
                         engine=s.engine)  # what the pool serves it with
    req = scifact_requests(1, 20, 20)[0]
    cases = {"1 passage": {"query": req["query"], "documents": req["documents"][:1]},
             "20 passages": {"query": req["query"], "documents": req["documents"]}}
    result: dict = {"engine": local.engine, "threads": s.intra_op_threads, "max_length": s.max_length,
                    "rounds": args.rounds, "cases": {}}
    with svc.service(args.url, args.port) as url, httpx.Client(timeout=60) as client:
        version = svc.publish(url, args.domain, version_dir, activate=True)
        user = svc.domain_user(args.domain)
        for name, body in cases.items():
            http_ms, local_ms = [], []
            for i in range(args.rounds + 2):  # two warm-ups: model load in the replica, first-call allocations
                time.sleep(0.3)  # let the other side's onnxruntime spin-waiting threads go idle first
                t0 = time.perf_counter()
                r = client.post(f"{url}/rerank", params={"domain": args.domain}, json={**body, "user_id": user})
                t1 = time.perf_counter()
                r.raise_for_status()
                assert r.json()["model"] == f"{args.domain}@{version}", r.json()["model"]
                time.sleep(0.3)
                t2 = time.perf_counter()
                local.score(body["query"], body["documents"])  # windows, as the service scores
                t3 = time.perf_counter()
                if i >= 2:
                    http_ms.append((t1 - t0) * 1000)
                    local_ms.append((t3 - t2) * 1000)
            c = {"in_process_ms": statistics.median(local_ms), "http_ms": statistics.median(http_ms)}
            c["added_ms"] = c["http_ms"] - c["in_process_ms"]
            result["cases"][name] = c
            print(f"{name}: in-process {c['in_process_ms']:.1f} ms, HTTP + Serve {c['http_ms']:.1f} ms,"
                  f" added {c['added_ms']:.1f} ms (medians of {args.rounds})", flush=True)
    result["loadavg_end"] = os.getloadavg()
    return save(args.out, result)


if __name__ == "__main__":
    main()
