"""This service beside a peer reranking server, on the same box, with the same requests: closed-loop users
sending 1 query x 50 SciFact abstracts (~300 tokens) to /rerank.

Regimes: (a) `fresh`: every passage text is new; (b) `registered`: requests drawn from a 5,000-passage
corpus registered ahead of time (ours: POST /v1/domains/default/passages, waited for); (c) `restarted`:
(b) again after our service was stopped and started on the same home (the embedding store on disk).
The peer keeps nothing between requests, so it runs (a) and (b) only: a restart changes nothing for it.

Peers: `infinity` (infinity-emb in its own virtual environment, --peer-python, serving the MiniLM-L6
cross-encoder directory that benchmarks.latency builds: the base weights with a seeded classification
head), or `st` (a sentence-transformers CrossEncoder behind uvicorn: benchmarks/peer_server.py). Ours
serves its default base (the MiniLM-L6 bi-encoder, OpenVINO int8, two 1-thread pool replicas).

    BENCH_BASE_DIR=... .venv/bin/python -m benchmarks.peer --peer infinity --peer-python /work/peer-venv/bin/python
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx

from benchmarks import service as svc
from benchmarks.data import SCIFACT
from benchmarks.results_io import RESULTS, save
from benchmarks.throughput import closed_loop, request_stream

DOMAIN = "default"


def corpus(n: int) -> list[str]:
    with open(SCIFACT / "corpus.jsonl") as f:
        texts = [(r.get("title", "") + " " + r["text"]).strip() for r in map(json.loads, f)]
    return random.Random(0).sample(texts, n)


def corpus_stream(texts: list[str], queries: list[str], docs: int, seed: int) -> Iterator[dict]:
    rng = random.Random(seed)
    while True:
        yield {"query": rng.choice(queries), "documents": rng.sample(texts, docs)}


def register(url: str, texts: list[str]) -> dict[str, Any]:
    """POST the corpus as JSONL and wait for its embedding job; its time and the store's size."""
    body = "".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)).encode()
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/v1/domains/{DOMAIN}/passages", content=body, headers=svc.admin_headers(), timeout=300)
    r.raise_for_status()
    job_id = r.json()["job_id"]
    with httpx.Client(base_url=url) as c:
        job = svc.wait_job(c, job_id, poll_s=1)
    return {"status": job["status"], "seconds": round(time.perf_counter() - t0, 1), "progress": job["progress"],
            "metrics": job["metrics"]}


def run_regime(url: str, users: list[int], seconds: float, stream_for, timeout_s: float = 300) -> list[dict]:
    rows = []
    for n in users:
        asyncio.run(closed_loop(url, n, 3, stream_for(1), DOMAIN, timeout_s))  # warm-up
        row = asyncio.run(closed_loop(url, n, seconds, stream_for(2), DOMAIN, timeout_s))
        rows.append(row)
        print(f"    {n} users: {row['pairs_per_s']:.0f} pairs/s, p50 {row['p50_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms, "
              f"{row['requests']} requests, {row['failures']} failed", flush=True)
    return rows


def start_peer(kind: str, python: str, model_dir: Path, port: int, threads: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    if kind == "infinity":
        cmd = [str(Path(python).parent / "infinity_emb"), "v2", "--model-id", str(model_dir), "--port", str(port),
               "--host", "127.0.0.1", "--engine", "torch", "--device", "cpu", "--batch-size", "16",
               "--no-bettertransformer", "--no-trust-remote-code", "--no-model-warmup"]
    else:
        cmd = [python, "-m", "benchmarks.peer_server", str(model_dir), "--port", str(port), "--threads", str(threads)]
    proc = subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"peer exited with {proc.returncode}: see {log}")
        try:
            if httpx.post(f"{url}/rerank", json={"query": "q", "documents": ["a passage"]}, timeout=30).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(2)
    proc.kill()
    raise SystemExit(f"peer not ready after 300 s: see {log}")


def ours(args: argparse.Namespace, home: Path, texts: list[str], fresh, registered, result: dict) -> None:
    """(a) fresh, register the corpus, (b) registered; stop; start on the same home; (c) restarted."""
    with svc.service(None, args.port, home) as url:
        print("ours, fresh", flush=True)
        result["ours"]["fresh"] = run_regime(url, args.users, args.seconds, fresh)
        result["ours"]["register"] = register(url, texts)
        print(f"ours, registered {args.corpus} passages: {result['ours']['register']}", flush=True)
        result["ours"]["registered"] = run_regime(url, args.users, args.seconds, registered)
        save(args.out, result)  # kept so far, should a later phase fail
    store = home / "embeddings" / "passages.sqlite"
    result["ours"]["store_bytes"] = store.stat().st_size if store.is_file() else None
    with svc.service(None, args.port, home) as url:  # a restart: same home, new processes
        print("ours, registered, after a restart", flush=True)
        result["ours"]["restarted"] = run_regime(url, args.users, args.seconds, registered)
    save(args.out, result)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peer", choices=("infinity", "st"), default="infinity")
    ap.add_argument("--peer-python", default=sys.executable, help="the peer's interpreter (its own venv)")
    ap.add_argument("--peer-threads", type=int, default=2)
    ap.add_argument("--users", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4])
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--docs", type=int, default=50)
    ap.add_argument("--corpus", type=int, default=5000)
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--skip-ours", action="store_true", help="the peer alone (its results go to --out)")
    ap.add_argument("--peer-regimes", default="fresh,registered",
                    help="the peer keeps nothing between requests: both cost the same")
    args = svc.own_service_args(ap, RESULTS / "peer.json", argv)
    # `timeout` stops with SIGTERM: unwind, so the service and the peer we started are stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from benchmarks.latency import ensure_models, machine
    from training.sources.beir import load_beir

    ce_dir, _ = ensure_models(args.cache)
    texts = corpus(args.corpus)
    queries = sorted(load_beir(SCIFACT, "test").queries.values())
    fresh = lambda seed: request_stream("fresh", args.docs, seed)  # noqa: E731
    registered = lambda seed: corpus_stream(texts, queries, args.docs, seed)  # noqa: E731
    result: dict[str, Any] = {"machine": machine(), "docs_per_request": args.docs, "corpus": args.corpus,
                              "seconds": args.seconds, "ours": {}, "peer": {"kind": args.peer}}

    home = svc.fresh_home("reranker-bench-peer-")
    if not args.skip_ours:
        ours(args, home, texts, fresh, registered, result)
    if not args.skip_peer:
        port = svc.free_port()
        peer = start_peer(args.peer, args.peer_python, ce_dir, port, args.peer_threads, home / "peer.log")
        try:
            url = f"http://127.0.0.1:{port}"
            for name, stream in (("fresh", fresh), ("registered", registered)):
                if name not in args.peer_regimes.split(","):
                    continue
                print(f"peer ({args.peer}), {name}", flush=True)
                result["peer"][name] = run_regime(url, args.users, args.seconds, stream)
                save(args.out, result)
        finally:
            peer.send_signal(signal.SIGTERM)
            try:
                peer.wait(30)
            except subprocess.TimeoutExpired:
                peer.kill()
    result["machine"]["loadavg_end"] = os.getloadavg()
    return save(args.out, result)


if __name__ == "__main__":
    main()
