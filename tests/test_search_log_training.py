"""End to end: live traffic with clicks -> a training job from the search logs -> a new version."""
from __future__ import annotations

import json
import random
import time

import pytest

from tests.conftest import SCIFACT
from tests.test_training_http import TINY, wait

# ~2 min on an idle 2-core machine; 10x that when the cores are shared with a training run
pytestmark = [pytest.mark.skipif(not SCIFACT.is_dir(), reason="needs ../shared/data/scifact"),
              pytest.mark.timeout(2400)]


def scifact_slice(n_queries: int, n_docs: int, seed: int = 5):
    """n_queries SciFact *train* queries, each with its relevant abstracts and random others."""
    corpus = {}
    for line in open(SCIFACT / "corpus.jsonl"):
        d = json.loads(line)
        corpus[d["_id"]] = f"{d['title']} {d['text']}"[:1200]
    queries = {q["_id"]: q["text"] for q in map(json.loads, open(SCIFACT / "queries.jsonl"))}
    qrels: dict[str, set[str]] = {}
    for line in list(open(SCIFACT / "qrels" / "train.tsv"))[1:]:
        q, d, _ = line.split("\t")
        qrels.setdefault(q, set()).add(d)
    rng = random.Random(seed)
    ids = sorted(corpus)
    out = []
    for q in rng.sample(sorted(qrels), n_queries):
        docs = sorted(qrels[q]) + [d for d in rng.sample(ids, n_docs) if d not in qrels[q]][: n_docs - len(qrels[q])]
        rng.shuffle(docs)
        out.append((queries[q], [{"id": d, "text": corpus[d]} for d in docs], qrels[q]))
    return out


def test_clicks_become_a_published_model(service):
    domain = "clicklog"
    traffic = scifact_slice(24, 8)
    with service.client() as c:
        for i, (query, docs, relevant) in enumerate(traffic):
            r = c.post(f"/rerank?domain={domain}", json={"query": query, "documents": docs, "user_id": f"u{i}"})
            assert r.status_code == 200, r.text
            clicked = [res["index"] for res in r.json()["results"] if docs[res["index"]]["id"] in relevant]
            fb = c.post("/v1/feedback", json={"request_id": r.json()["id"], "clicked": clicked})
            assert fb.status_code == 200, fb.text
        r = c.post(f"/v1/domains/{domain}/train/reranker", headers=service.admin,
                   json={"search_logs": True, "activate": True, "config": TINY})
        assert r.status_code == 202, r.text
        rec = wait(c, r.json()["job_id"], timeout=2100)
        assert rec["status"] == "succeeded", rec.get("error")
        logs = rec["sources"]["search_logs"]
        assert logs["with_clicks"] == len(traffic)
        assert logs["positives"] == sum(len(rel) for _, _, rel in traffic)
        assert rec["version"] == f"{domain}@v1"
        assert service.registry.active_version(domain) == "v1"
        time.sleep(1)
        served = {c.post(f"/rerank?domain={domain}", json={"query": "q", "documents": ["a", "b"],
                                                            "user_id": f"k{i}"}).json()["model"] for i in range(20)}
        assert f"{domain}@v1" in served
