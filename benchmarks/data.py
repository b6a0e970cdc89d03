"""Benchmark inputs from the visible datasets (BEIR layout, read by training.sources.beir)."""
from __future__ import annotations

import os
import random
from functools import lru_cache
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SCIFACT = Path(os.environ.get("SCIFACT_DIR") or SHARED_DATA / "scifact")


@lru_cache
def _scifact_test():
    from training.sources.beir import load_beir

    return load_beir(SCIFACT, "test")


def scifact_requests(n: int, min_docs: int = 20, max_docs: int = 50, seed: int = 0) -> list[dict]:
    """SciFact test claims, each with its relevant abstracts plus random ones (min..max passages, natural
    length, shuffled), as rerank request bodies {query, documents}."""
    data = _scifact_test()
    rng = random.Random(seed)
    ids = sorted(data.corpus)
    out = []
    for qid in rng.sample(sorted(data.qrels), min(n, len(data.qrels))):
        k = rng.randint(min_docs, max_docs)
        docs = [data.corpus[d] for d in data.qrels[qid]][:k]
        docs += [data.corpus[d] for d in rng.sample(ids, k - len(docs))]
        rng.shuffle(docs)
        out.append({"query": data.queries[qid], "documents": docs})
    return out
