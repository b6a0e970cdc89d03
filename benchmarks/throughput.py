"""Throughput under concurrency: closed-loop clients, each sending 1 query x 50 SciFact abstracts (~340
tokens) to /rerank, against the engine's own single-process pairs/s on the same requests.

Two passage regimes, because RAG backends resend chunks and bi-encoder versions cache passage
embeddings (scoring/cache.py): `fresh` (every passage of every request is new: no cache can help)
and `repeated` (requests drawn from a fixed set of 20, as a backend re-ranking popular chunks does).

    .venv/bin/python -m benchmarks.throughput                 # starts the service on 127.0.0.1:8123
    .venv/bin/python -m benchmarks.throughput --url http://127.0.0.1:8000 --users 1,2,4,8 --seconds 30
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks import service as svc
from benchmarks.data import scifact_requests
from benchmarks.results_io import RESULTS, save


def request_stream(regime: str, docs_per_request: int, seed: int = 0):
    """An endless supply of request bodies for one regime."""
    pool = scifact_requests(300 if regime == "fresh" else 20, docs_per_request, docs_per_request, seed=seed)
    rng = random.Random(seed)
    n = 0
    while True:
        body = dict(rng.choice(pool))
        if regime == "fresh":  # a new passage text every time: nothing can be cached
            n += 1
            body["documents"] = [f"[{n}.{i}] {d}" for i, d in enumerate(body["documents"])]
        yield body


async def closed_loop(url: str, users: int, seconds: float, bodies, domain: str,
                      timeout_s: float = 120) -> dict[str, Any]:
    latencies: list[float] = []
    pairs = failures = 0
    deadline = time.perf_counter() + seconds

    async def user(client: httpx.AsyncClient) -> None:
        nonlocal pairs, failures
        while time.perf_counter() < deadline:
            body = next(bodies)
            t0 = time.perf_counter()
            try:
                r = await client.post(f"{url}/rerank", params={"domain": domain}, json=body)
            except httpx.TimeoutException:  # not answered within timeout_s: a failure, not a crash
                failures += 1
                continue
            if r.status_code != 200:
                failures += 1
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
            pairs += len(body["documents"])

    t_start = time.perf_counter()
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        await asyncio.gather(*(user(client) for _ in range(users)))
    elapsed = time.perf_counter() - t_start
    latencies.sort()
    pct = (lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None)
    return {"users": users, "requests": len(latencies), "failures": failures, "seconds": round(elapsed, 1),
            "pairs_per_s": pairs / elapsed, "p50_ms": pct(0.5), "p95_ms": pct(0.95)}


def engine_pairs_per_s(version_dir: Path, bodies, n: int) -> float:
    """The engine alone, in this process, one request after another (the service's settings)."""
    from scoring.scorer import VersionScorer
    from state.settings import Settings

    s = Settings()
    scorer = VersionScorer(version_dir, threads=s.intra_op_threads, max_length=s.max_length,
                           batch_size=s.batch_size, engine=s.engine, doc_tokens=s.doc_tokens,
                           window_overlap=s.window_overlap)
    reqs = [next(bodies) for _ in range(n + 1)]
    scorer.score(reqs[0]["query"], reqs[0]["documents"])  # warm-up
    t0 = time.perf_counter()
    for r in reqs[1:]:
        scorer.score(r["query"], r["documents"])
    return sum(len(r["documents"]) for r in reqs[1:]) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running service on 127.0.0.1; default: start one")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--users", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--docs", type=int, default=50)
    ap.add_argument("--regimes", default="fresh,repeated")
    ap.add_argument("--engine-requests", type=int, default=8)
    ap.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    args = ap.parse_args(argv)
    from benchmarks.latency import machine
    from exporters.base_model import ensure_base
    from state.settings import Settings

    # one home for the service we start and the in-process engine: the same base version dir
    home = Path(os.environ.setdefault("BENCH_HOME", str(Path(tempfile.gettempdir()) / "reranker-bench-home")))
    base = ensure_base(Settings(home=home))
    result: dict[str, Any] = {"machine": machine(), "docs_per_request": args.docs, "regimes": {}}
    with svc.service(args.url, args.port) as url:
        for regime in args.regimes.split(","):
            engine = engine_pairs_per_s(base, request_stream("fresh", args.docs, seed=99), args.engine_requests)
            rows = []
            for users in args.users:
                asyncio.run(closed_loop(url, users, 3, request_stream(regime, args.docs, 1), "bench"))  # warm
                row = asyncio.run(closed_loop(url, users, args.seconds, request_stream(regime, args.docs, 2),
                                              "bench"))
                row["vs_engine"] = row["pairs_per_s"] / engine
                rows.append(row)
                print(f"{regime:8} {users} users: {row['pairs_per_s']:.0f} pairs/s ({row['vs_engine']:.0%} of the "
                      f"engine's {engine:.0f}), p50 {row['p50_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms, "
                      f"{row['failures']} failed", flush=True)
            result["regimes"][regime] = {"engine_pairs_per_s": engine, "rows": rows}
    result["machine"]["loadavg_end"] = os.getloadavg()
    return save(args.out, result)


if __name__ == "__main__":
    main()
