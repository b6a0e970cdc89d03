"""The rerank endpoint over real HTTP on a real Ray Serve, answered by the offline base model."""
from __future__ import annotations

import json

import pytest

PARIS = "Paris is the capital and largest city of France."
UNRELATED = ["Bananas are yellow and rich in potassium.",
             "The stock market fell sharply on Tuesday.",
             "Photosynthesis converts light into chemical energy in plants."]


def post(c, path, body, **kw):
    return c.post(path, json=body, **kw)


def test_paris_outranks_unrelated_passages(service):
    with service.client() as c:
        r = post(c, "/rerank?domain=any", {"query": "What is the capital of France?",
                                            "documents": [UNRELATED[0], UNRELATED[1], PARIS, UNRELATED[2]]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["results"][0]["index"] == 2
    scores = [x["relevance_score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert body["variant"] == "base" and body["model"] == "base" and body["domain"] == "any"
    assert body["id"] and "reason" in body["meta"]


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
def test_aliases_and_domain_in_body(service, path):
    with service.client() as c:
        r = post(c, path, {"query": "capital of France", "domain": "legal",
                           "documents": ["Bananas are yellow.", "Paris is the capital of France."]})
    assert r.status_code == 200, r.text
    assert r.json()["domain"] == "legal"
    assert r.json()["results"][0]["index"] == 1


def test_top_n_return_documents_and_index_mapping(service):
    docs = [{"id": "b", "text": UNRELATED[0]}, PARIS, {"id": "s", "text": UNRELATED[1], "source": "news"}]
    with service.client() as c:
        r = post(c, "/rerank", {"query": "capital of France", "documents": docs, "top_n": 2,
                                "return_documents": True})
        r2 = post(c, "/rerank", {"query": "capital of France", "documents": docs})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 2
    assert results[0]["index"] == 1 and results[0]["document"] == {"text": PARIS}
    for res in results:  # each returned document is the one at its original index
        original = docs[res["index"]]
        expected = original if isinstance(original, dict) else {"text": original}
        assert res["document"] == expected
    full = r2.json()["results"]
    assert len(full) == 3 and all("document" not in x for x in full)
    assert sorted(x["index"] for x in full) == [0, 1, 2]


FILLER = "The committee discussed the budget for the next fiscal year and agreed on procedural matters. "


def test_a_relevant_sentence_deep_in_a_long_document_counts(service):
    """Evidence after token 256 (the model's window) lifts its document above short unrelated ones."""
    deep = FILLER * 25 + PARIS + " " + FILLER * 5  # ~450 tokens of filler before the answer
    docs = [UNRELATED[0], FILLER * 30, deep, UNRELATED[1]]
    with service.client() as c:
        r = post(c, "/rerank", {"query": "What is the capital of France?", "documents": docs})
        cut = post(c, "/rerank", {"query": "What is the capital of France?", "documents": docs,
                                  "max_tokens_per_doc": 200})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["results"][0]["index"] == 2, body["results"]
    assert body["meta"]["windows"] > len(docs) and body["meta"]["truncated_documents"] == 0
    # capped before the answer: the same document is cut, counted, and no longer wins
    assert cut.json()["meta"]["truncated_documents"] == 2
    assert cut.json()["results"][0]["index"] != 2


@pytest.mark.parametrize("body,field", [
    ({"documents": ["a"]}, "query"),
    ({"query": "", "documents": ["a"]}, "query"),
    ({"query": "   ", "documents": ["a"]}, "query"),
    ({"query": "q", "documents": []}, "documents"),
    ({"query": "q"}, "documents"),
    ({"query": "q", "documents": ["a", 5]}, "documents.1"),
    ({"query": "q", "documents": ["a", {"id": "x"}]}, "documents.1"),
    ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
    ({"query": "q", "documents": ["d"] * 51}, "documents"),
])
def test_validation_errors_name_the_field(service, body, field):
    with service.client() as c:
        r = post(c, "/rerank", body)
    assert r.status_code == 422, r.text
    fields = [d["field"] for d in r.json()["detail"]]
    assert field in fields
    assert field in r.json()["error"]


def test_invalid_domain_is_rejected(service):
    with service.client() as c:
        r = post(c, "/rerank?domain=../etc", {"query": "q", "documents": ["a"]})
    assert r.status_code == 422 and "domain" in r.json()["error"]


def test_malformed_json_and_oversized_body(service):
    with service.client() as c:
        bad = c.post("/rerank", content=b'{"query": "q", "documents": [', headers={"content-type": "application/json"})
        big = c.post("/rerank", content=json.dumps({"query": "q", "documents": ["x" * 300_000]}),
                     headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "malformed JSON" in bad.json()["error"]
    assert big.status_code == 413 and "limit" in big.json()["error"]


def test_health_readiness_and_metrics(service):
    with service.client() as c:
        assert c.get("/healthz").status_code == 200
        ready = c.get("/readyz").json()
        assert (ready["status"], ready["bases"]) == ("ready", ["base"])
        assert c.post("/v1/domains", json={"domain": "metricsdomain"}, headers=service.admin).status_code == 201
        post(c, "/rerank?domain=metricsdomain", {"query": "q", "documents": ["a", "b"]})
        post(c, "/rerank?domain=metricsdomain", {"query": "q", "documents": ["a"] * 51})  # over max_documents
        post(c, "/rerank?domain=not-registered", {"query": "q", "documents": ["a", "b"]})
        text = c.get("/metrics").text
    assert 'reranker_requests_total{domain="metricsdomain",model="base",variant="base"}' in text
    assert 'reranker_request_latency_seconds_count{domain="metricsdomain"' in text
    assert 'reranker_errors_total{domain="metricsdomain",status="422"}' in text
    assert 'domain="_other"' in text and "not-registered" not in text  # unregistered ids add no series


def test_the_base_fuses_request_local_bm25(service):
    """The served base has no domain statistics: its cosine is fused with BM25 over the request's own
    documents (meta.fused); one document has nothing to normalise over and is not fused."""
    docs = [UNRELATED[0], PARIS, UNRELATED[1]]
    with service.client() as c:
        many = post(c, "/rerank", {"query": "What is the capital of France?", "documents": docs}).json()
        one = post(c, "/rerank", {"query": "What is the capital of France?", "documents": [PARIS]}).json()
    assert many["meta"]["fused"] is True and many["results"][0]["index"] == 1
    assert "fused" not in one["meta"]


def test_a_hybrid_domain_version_is_served_fused(service, tmp_path):
    """A version that ships lexical.json.gz + fusion.json: its scores are the z-sum of its neural score
    and BM25 with the domain's statistics, as VersionScorer computes them; TEI's raw score is the z-sum."""
    import math
    import shutil

    from scoring.fusion import Fusion
    from scoring.lexical import Analyzer, LexicalStats
    from scoring.scorer import VersionScorer

    vdir = tmp_path / "hybrid"
    shutil.copytree(service.base_dir, vdir)
    (vdir / "manifest.json").unlink()  # publish_dir writes the manifest with every file's sha256
    man = json.loads((service.base_dir / "manifest.json").read_text())
    (vdir / "manifest.json").write_text(json.dumps({k: v for k, v in man.items() if k != "files"}))
    an = Analyzer("en")
    LexicalStats.fit(an.batch([PARIS, *UNRELATED, "France is a country in Europe."]), an).save(vdir / "lexical.json.gz")
    Fusion.with_lexical_weight(0.3).save(vdir / "fusion.json")
    reg = service.registry
    version = reg.publish_dir("hybrid", vdir, activate=True)
    reg.update_config("hybrid", ab_split=1.0)
    docs = [UNRELATED[0], PARIS, UNRELATED[1], "France is a country in Europe."]
    query = "What is the capital of France?"
    with service.client() as c:
        r = post(c, "/rerank?domain=hybrid", {"query": query, "documents": docs})
        tei = c.post("/tei/hybrid/rerank", json={"query": query, "texts": docs, "raw_scores": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == f"hybrid@{version}" and body["variant"] == "domain" and body["meta"]["fused"] is True
    got = {x["index"]: x["relevance_score"] for x in body["results"]}
    local = VersionScorer(reg.version_dir("hybrid", version), engine=service_engine(vdir)).score(query, docs)
    assert local.fused
    assert got == pytest.approx(dict(enumerate(local.scores.tolist())), abs=1e-5)
    raw = {x["index"]: x["score"] for x in tei.json()}
    assert raw == pytest.approx({i: math.log(s / (1 - s)) for i, s in got.items()}, abs=1e-3)
    assert abs(sum(raw.values())) < 1e-3  # a z-sum: centred on the request's documents


def service_engine(vdir):
    """The engine the session service scores with: OpenVINO when the version ships it (the default)."""
    from state.settings import Settings

    engine = Settings().engine
    return engine if engine == "onnxruntime" or (vdir / "openvino_model.xml").is_file() else "onnxruntime"
