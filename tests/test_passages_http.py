"""Passages registered ahead of time (POST /v1/domains/{d}/passages) and a promote's warm-up.

On the app's seam (a recording scorer, no Ray): validation, limits, the job and its progress, the warm-up
and its budget. On the real service (Ray Serve, real models, the node's embedding store): registered
passages are answered without inference (meta.cached_documents), by either pool replica.
"""
from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from serving.ingress import create_app
from state.registry import Registry
from state.settings import Settings
from tests.conftest import SCIFACT, make_tarball
from tests.test_app_seam import TOKEN, WordOverlap, publish_fake
from tests.test_training_http import wait as wait_job

AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Embedding(WordOverlap):
    """Also a Scorer's embed(): remembers what each model embedded; says how many were new."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.embedded: dict[str, list[str]] = {}

    async def embed(self, model_id: str, documents: list[str]) -> int:
        seen = self.embedded.setdefault(model_id, [])
        new = [d for d in documents if d not in seen]
        seen.extend(new)
        return len(new)


def jsonl(*rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


@pytest.fixture
def seam(tmp_path):
    settings = Settings(home=tmp_path, admin_token=TOKEN, registry_cache_ttl_s=0, max_passages_per_upload=5,
                        max_passage_chars=200, max_data_upload_bytes=4000)
    publish_fake(Registry(settings.registry_root), "legal", 1.0)
    scorer = Embedding()
    with TestClient(create_app(settings, scorer)) as c:
        yield c, scorer, settings


@pytest.mark.parametrize("body, expected", [
    (b"", "no passages"),
    (jsonl({"text": "fine"}, "{not json"), "line 2: not JSON"),
    (jsonl({"text": "fine"}, ["a list"]), "line 2: must be an object"),
    (jsonl({"text": "fine", "title": "x"}), "line 1: unknown fields ['title']"),
    (jsonl({"id": "a"}), "line 1: text must be a non-empty string"),
    (jsonl({"text": "   "}), "line 1: text must be a non-empty string"),
    (jsonl({"text": "x" * 201}), "line 1: text has 201 characters; at most 200"),
    (jsonl({"text": "fine", "id": 7}), "line 1: id must be a string"),
    (jsonl('{"text": "lone \\ud800 surrogate"}'), "line 1: text holds a lone surrogate"),
    (jsonl(*({"text": f"p{i}"} for i in range(6))), "more than 5 passages"),
])
def test_a_bad_upload_is_refused_naming_the_line_and_registers_nothing(seam, body, expected):
    c, scorer, _ = seam
    r = c.post("/v1/domains/legal/passages", content=body, headers=AUTH)
    assert r.status_code == 422 and expected in r.json()["error"], r.text
    assert c.get("/v1/domains/legal/passages").json()["passages"] == 0 and not scorer.embedded


def test_upload_needs_the_token_a_known_domain_and_fits_the_limit(seam):
    c, _, _ = seam
    body = jsonl({"text": "a passage"})
    assert c.post("/v1/domains/legal/passages", content=body).status_code == 401
    assert c.post("/v1/domains/legal/passages", content=body,
                  headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.post("/v1/domains/nowhere/passages", content=body, headers=AUTH).status_code == 404
    assert c.post("/v1/domains/Bad!/passages", content=body, headers=AUTH).status_code == 422
    r = c.post("/v1/domains/legal/passages", content=jsonl({"text": "y" * 150}) * 30, headers=AUTH)
    assert r.status_code == 413, r.text  # over max_data_upload_bytes


def test_registered_passages_are_embedded_by_a_job_with_the_champion_and_the_base(seam):
    c, scorer, _ = seam
    rows = [{"id": "d1", "text": "alpha passage"}, {"text": "beta passage"}, {"text": "alpha passage"}]
    r = c.post("/v1/domains/legal/passages", content=jsonl(*rows), headers=AUTH)
    assert r.status_code == 202, r.text
    out = r.json()
    assert (out["passages"], out["added"], out["already_registered"]) == (3, 2, 1)
    assert out["models"] == ["legal@v1", "base"]
    job = wait_job(c, out["job_id"])
    assert job["status"] == "succeeded" and job["kind"] == "passages", job
    assert job["progress"] == {"done": 4, "total": 4}  # two distinct texts, two models
    assert job["metrics"] == {"computed": 4, "already_stored": 0}
    assert scorer.embedded == {"legal@v1": ["alpha passage", "beta passage"], "base": ["alpha passage", "beta passage"]}
    assert out["job_id"] in [j["id"] for j in c.get("/v1/jobs", params={"domain": "legal"}).json()["jobs"]]
    # the same file again: nothing new registered, nothing computed again
    again = c.post("/v1/domains/legal/passages", content=jsonl(*rows), headers=AUTH).json()
    assert again["added"] == 0 and wait_job(c, again["job_id"])["metrics"] == {"computed": 0, "already_stored": 4}
    assert c.get("/v1/domains/legal/passages").json()["passages"] == 2
    # the default domain (no version: the base only) takes passages too, and so does any valid domain id
    r = c.post("/v1/domains/default/passages", content=jsonl({"text": "gamma"}), headers=AUTH)
    assert r.status_code == 202 and r.json()["models"] == ["base"]
    long_id = "a_domain_" + "x" * 55  # 64 characters, with "_": its job id still matches JOB_ID_RE
    c.post("/v1/domains", json={"domain": long_id}, headers=AUTH)
    r = c.post(f"/v1/domains/{long_id}/passages", content=jsonl({"text": "delta"}), headers=AUTH)
    assert r.status_code == 202 and wait_job(c, r.json()["job_id"])["status"] == "succeeded", r.text


def _publish(settings: Settings, domain: str) -> None:
    reg = Registry(settings.registry_root)
    staged = reg.stage(domain)
    (staged / "model.onnx").write_bytes(b"fake")
    reg.publish(domain, staged, {"kind": "bi-encoder"})


def test_promote_embeds_seen_and_registered_passages_before_the_flip(seam):
    c, scorer, settings = seam
    c.post("/v1/domains/legal/passages", content=jsonl({"text": "registered one"}), headers=AUTH)
    shown = c.post("/rerank?domain=legal", json={"query": "q", "documents": ["seen a", "seen b"]})
    assert shown.status_code == 200
    end = time.monotonic() + 10  # the event logger stores the impression on its next flush
    while not c.app.state.store.count_impressions("legal") and time.monotonic() < end:
        time.sleep(0.05)
    _publish(settings, "legal")
    r = c.post("/v1/domains/legal/promote", json={"version": "v2"}, headers=AUTH)
    assert r.status_code == 200, r.text
    warm = r.json()["warm"]
    assert warm == {"passages": 3, "embedded": 3, "computed": 3, "complete": True, "job_id": None}
    assert sorted(scorer.embedded["legal@v2"]) == ["registered one", "seen a", "seen b"]
    assert scorer.warmed[-1] == "legal@v2" and r.json()["active"] == "v2"


def test_a_challenger_is_warmed_before_it_takes_traffic(seam):
    """Its p95 latency is a guardrail against the champion's: it must not start cold."""
    c, scorer, settings = seam
    c.post("/v1/domains/legal/passages", content=jsonl({"text": "registered one"}, {"text": "two"}), headers=AUTH)
    _publish(settings, "legal")
    r = c.post("/v1/domains/legal/challenger", json={"version": "v2", "by": "alice"}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert sorted(scorer.embedded["legal@v2"]) == ["registered one", "two"]
    event = c.get("/v1/domains/legal/timeline").json()["events"][0]
    assert event["kind"] == "challenged" and "2 of 2 passages embedded ahead" in event["summary"], event


def test_past_the_warm_budget_the_promote_goes_ahead_and_a_job_embeds_the_rest(tmp_path):
    settings = Settings(home=tmp_path, admin_token=TOKEN, registry_cache_ttl_s=0, promote_warm_s=0)
    publish_fake(Registry(settings.registry_root), "legal", 1.0)
    scorer = Embedding()
    with TestClient(create_app(settings, scorer)) as c:
        texts = [{"text": f"passage {i}"} for i in range(40)]
        wait_job(c, c.post("/v1/domains/legal/passages", content=jsonl(*texts), headers=AUTH).json()["job_id"])
        _publish(settings, "legal")
        r = c.post("/v1/domains/legal/promote", json={"version": "v2"}, headers=AUTH)
        assert r.status_code == 200 and r.json()["active"] == "v2", r.text
        warm = r.json()["warm"]
        assert (warm["passages"], warm["embedded"], warm["complete"]) == (40, 0, False) and warm["job_id"]
        job = wait_job(c, warm["job_id"])
        assert job["status"] == "succeeded" and job["progress"] == {"done": 40, "total": 40}
        assert len(scorer.embedded["legal@v2"]) == 40


# -- the real service ------------------------------------------------------------------------------
def test_registered_passages_are_answered_without_inference(service, base_version, tmp_path):
    with open(SCIFACT / "corpus.jsonl") as f:  # real abstracts, ~300 tokens
        texts = [json.loads(next(f))["text"] for _ in range(40)]
    with service.client() as c:
        r = c.post("/v1/domains/default/passages", content=jsonl(*({"text": t} for t in texts[:30])),
                   headers=service.admin)
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["job_id"], timeout=600)
        assert job["status"] == "succeeded" and job["progress"]["done"] == 30, job
        # base-only domain: every request is the base model; the pool has two replicas, the job's
        # chunks went to either, and each request too: all 30 are stored for whichever answers
        for q in ("what causes inflammation?", "gene expression in cancer", "vitamin D deficiency", "sleep"):
            out = c.post("/rerank", json={"query": q, "documents": texts[:30]}).json()
            assert out["meta"]["cached_documents"] == 30, out["meta"]
        mixed = c.post("/rerank", json={"query": "protein folding", "documents": texts[25:40]}).json()
        assert mixed["meta"]["cached_documents"] == 5  # only the registered five; the ten new are computed
        # a bi-encoder version promoted through the API is warm with the registered passages
        tar = make_tarball(base_version, tmp_path / "v.tar.gz")
        assert c.post("/v1/domains", json={"domain": "warmed", "ab_split": 1.0},
                      headers=service.admin).status_code == 201
        r = c.post("/v1/domains/warmed/versions", content=tar.read_bytes(),
                   headers={**service.admin, "content-type": "application/gzip"})
        assert r.status_code == 201, r.text
        r = c.post("/v1/domains/warmed/passages", content=jsonl(*({"text": t} for t in texts[:20])),
                   headers=service.admin)
        assert wait_job(c, r.json()["job_id"], timeout=600)["status"] == "succeeded"
        r = c.post("/v1/domains/warmed/promote", json={"version": "v1"}, headers=service.admin)
        assert r.status_code == 200, r.text
        assert r.json()["warm"]["complete"] and r.json()["warm"]["embedded"] == 20
        out = c.post("/rerank?domain=warmed", json={"query": "what causes inflammation?",
                                                    "documents": texts[:20]}).json()
        assert out["model"] == "warmed@v1" and out["meta"]["cached_documents"] == 20, out
