"""The passage-embedding store (scoring/embedding_store.py): what it costs, and what fp16 costs in scores.

1. Candidate stores, 100k one-window passages of 384 fp16 dims: SQLite in WAL mode (our EmbeddingStore:
   batched puts on its writer thread, reads of 50 random keys as one request does, the file's bytes,
   `PRAGMA quick_check` on open) beside LMDB (`lmdb` on PyPI, measured when importable: not a dependency).
2. Score parity: the base bi-encoder on SciFact test requests, passage embeddings in fp32 (no cache) against
   fp16 (what the cache and the store hold): max |score difference| and whether the order changes.

    .venv/bin/python -m benchmarks.embedding_store        # ~1 min on 2 cores (builds the base once)
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.results_io import RESULTS, save

DIM, REQUEST = 384, 50


def _entries(n: int) -> list[tuple[bytes, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(hashlib.blake2b(str(i).encode(), digest_size=16).digest(),
             rng.standard_normal((1, DIM)).astype(np.float16)) for i in range(n)]


def _reads(get: Callable[[list[bytes]], Any], keys: list[bytes], rounds: int = 300) -> dict[str, float]:
    times = []
    for _ in range(rounds):
        batch = random.sample(keys, REQUEST)
        t = time.perf_counter()
        got = get(batch)
        times.append(time.perf_counter() - t)
        assert len(got) == REQUEST
    return {"read50_p50_ms": round(float(np.median(times)) * 1e3, 3),
            "read50_p95_ms": round(float(np.percentile(times, 95)) * 1e3, 3)}


def sqlite_store(entries: list[tuple[bytes, np.ndarray]], d: Path) -> dict[str, Any]:
    from scoring.embedding_store import EmbeddingStore

    store = EmbeddingStore(d / "s.sqlite", 4 << 30)
    t = time.perf_counter()
    for i in range(0, len(entries), REQUEST):  # as requests put them: one batch each
        store.put_many([(k, "v1", (e, False)) for k, e in entries[i:i + REQUEST]])
    store.flush(600)
    put_s = time.perf_counter() - t
    out = {"put_per_50_ms": round(put_s / (len(entries) / REQUEST) * 1e3, 3),
           **_reads(store.get_many, [k for k, _ in entries])}
    store.close()
    out["file_bytes"] = (d / "s.sqlite").stat().st_size
    t = time.perf_counter()
    EmbeddingStore(d / "s.sqlite", 4 << 30).close()  # open = quick_check + schema
    out["open_with_quick_check_s"] = round(time.perf_counter() - t, 3)
    return out


def lmdb_store(entries: list[tuple[bytes, np.ndarray]], d: Path) -> dict[str, Any] | None:
    try:
        import lmdb
    except ImportError:
        return None
    env = lmdb.open(str(d / "l"), map_size=4 << 30)
    t = time.perf_counter()
    for i in range(0, len(entries), REQUEST):
        with env.begin(write=True) as txn:
            for k, e in entries[i:i + REQUEST]:
                txn.put(k, e.tobytes())
    put_s = time.perf_counter() - t

    def get(keys: list[bytes]) -> list:
        with env.begin() as txn:
            return [txn.get(k) for k in keys]

    out = {"put_per_50_ms": round(put_s / (len(entries) / REQUEST) * 1e3, 3), **_reads(get, [k for k, _ in entries]),
           "file_bytes": (d / "l" / "data.mdb").stat().st_size}
    env.close()
    return out


def parity(base_dir: Path, n_requests: int) -> dict[str, Any]:
    from benchmarks.data import scifact_requests
    from scoring.cache import EmbeddingCache
    from scoring.scorer import VersionScorer

    fp32 = VersionScorer(base_dir, engine="openvino", threads=2)
    fp16 = VersionScorer(base_dir, engine="openvino", threads=2, cache=EmbeddingCache(1 << 30))
    diffs, same_order, same_top10 = [], 0, 0
    requests = scifact_requests(n_requests, 50, 50)
    for r in requests:
        a = fp32.score(r["query"], r["documents"]).scores
        b = fp16.score(r["query"], r["documents"]).scores
        diffs.append(np.abs(a - b))
        same_order += bool(np.array_equal(np.argsort(-a, kind="stable"), np.argsort(-b, kind="stable")))
        same_top10 += bool(np.array_equal(np.argsort(-a, kind="stable")[:10], np.argsort(-b, kind="stable")[:10]))
    d = np.concatenate(diffs)
    return {"requests": len(requests), "passages": int(d.size), "max_abs_score_diff": float(d.max()),
            "mean_abs_score_diff": float(d.mean()), "requests_same_order": same_order,
            "requests_same_top10": same_top10}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--parity-requests", type=int, default=30, help="SciFact test requests of 50 passages")
    ap.add_argument("--out", type=Path, default=RESULTS / "embedding_store.json")
    args = ap.parse_args(argv)

    from exporters.base_model import ensure_base
    from state.settings import Settings

    random.seed(0)
    entries = _entries(args.entries)
    d = Path(tempfile.mkdtemp(prefix="store-bench-"))
    try:
        result: dict[str, Any] = {"entries": args.entries, "dim": DIM, "loadavg_start": os.getloadavg(),
                                  "sqlite_wal": sqlite_store(entries, d), "lmdb": lmdb_store(entries, d)}
    finally:
        shutil.rmtree(d, ignore_errors=True)
    result["parity_fp16"] = parity(ensure_base(Settings()), args.parity_requests)
    result["loadavg_end"] = os.getloadavg()
    for k in ("sqlite_wal", "lmdb", "parity_fp16"):
        print(k, result[k])
    return save(args.out, result)


if __name__ == "__main__":
    main()
