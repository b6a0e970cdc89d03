"""Cohere and TEI wire shapes on the `create_app` seam (fake scorer, no Ray): `model` -> domain, Cohere's
options honoured or refused, one error shape, meta's api_version and billed_units, GET /v1/models, and
TEI's /tei/<domain>/rerank. The same clients against the real service: test_clients.py."""
from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.ingress import create_app
from serving.raw_scores import raw_scores
from state.registry import Registry
from state.settings import Settings
from test_app_seam import DOCS, TOKEN, WordOverlap, publish_fake


class RecordingOverlap(WordOverlap):
    """WordOverlap that keeps the texts it scored and, like the real scorer asked to truncate, counts
    documents longer than `max_words` (its "window") as truncated."""

    def __init__(self, broken=(), max_words: int = 1000):
        super().__init__(broken)
        self.texts: list[list[str]] = []
        self.truncates: list[bool] = []
        self.max_words = max_words

    async def score(self, model_id, query, documents, max_tokens_per_doc=None, truncate=False):
        scored = await super().score(model_id, query, documents, max_tokens_per_doc)
        self.texts.append(list(documents))
        self.truncates.append(truncate)
        if truncate:
            scored.truncated = sum(len(d.split()) > self.max_words for d in documents)
        return scored


def make_app(tmp_path, **overrides):
    kw = dict(home=tmp_path, admin_token=TOKEN, max_documents=5, max_body_bytes=10_000, registry_cache_ttl_s=0)
    settings = Settings(**{**kw, **overrides})
    reg = Registry(settings.registry_root)
    publish_fake(reg, "legal", 1.0)
    publish_fake(reg, "half", 0.5)
    base = reg.base_dir(settings.base_model, settings.max_length, settings.builds_openvino)  # raw_scores reads it
    base.mkdir(parents=True)
    (base / "manifest.json").write_text(json.dumps({"kind": "bi-encoder", "max_length": 128}))
    return settings


@pytest.fixture
def scorer():
    return RecordingOverlap(max_words=8)


@pytest.fixture
def client(tmp_path, scorer):
    with TestClient(create_app(make_app(tmp_path), scorer), raise_server_exceptions=False) as c:
        yield c


def rerank(client, path="/rerank", **body):
    return client.post(path, json={"query": "capital of France", "documents": DOCS, **body})


# ---- model -> domain ------------------------------------------------------------------------------
@pytest.mark.parametrize("path,body,domain", [
    ("/v2/rerank", {"model": "legal"}, "legal"),
    ("/v2/rerank", {"model": "domain:legal"}, "legal"),
    ("/v2/rerank", {"model": "rerank-v3.5"}, "default"),
    ("/v1/rerank", {"model": "rerank-english-v3.0", "domain": "legal"}, "legal"),
    ("/v1/rerank?domain=half", {"model": "rerank-multilingual-v3.0"}, "half"),
    ("/rerank?domain=legal", {"model": "legal", "domain": "legal"}, "legal"),
    ("/rerank", {"model": "domain:rerank-special"}, "rerank-special"),
    ("/rerank", {}, "default"),
])
def test_model_chooses_the_domain(client, scorer, path, body, domain):
    r = rerank(client, path, **body)
    assert r.status_code == 200, r.text
    assert r.json()["domain"] == domain
    if domain == "legal":  # split 1.0: the domain's model answered, not just the label
        assert r.json()["model"] == "legal@v1" and scorer.calls[-1] == "legal@v1"


@pytest.mark.parametrize("path,body,named", [
    ("/rerank?domain=half", {"model": "legal"}, ("legal", "half")),
    ("/v2/rerank", {"model": "domain:legal", "domain": "half"}, ("legal", "half")),
])
def test_model_and_domain_that_disagree_are_refused_naming_both(client, scorer, path, body, named):
    r = rerank(client, path, **body)
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["detail"][0]["field"] == "model"
    assert all(repr(n) in err["message"] for n in named) and err["message"] == err["error"]
    assert scorer.calls == []  # nothing was scored


@pytest.mark.parametrize("model", ["Legal Team!", "domain:", "domain:../x", "BAAI/bge-reranker-v2-m3"])
def test_a_model_that_is_neither_a_domain_nor_a_cohere_id_is_refused(client, model):
    r = rerank(client, model=model)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "model", r.text
    assert "rerank-" in r.json()["message"]


# ---- options: honoured or refused --------------------------------------------------------------------
def test_rank_fields_rank_object_documents_on_the_named_fields(client, scorer):
    docs = [{"title": "Bananas", "body": "are yellow", "id": "b"},
            {"title": "Paris", "body": "is the capital of France", "year": 2024},
            {"body": "Stocks fell", "title": "Markets"}]
    r = client.post("/v1/rerank", json={"query": "capital of France", "documents": docs,
                                        "rank_fields": ["title", "body"], "return_documents": True})
    assert r.status_code == 200, r.text
    assert scorer.texts[-1] == ["title: Bananas\nbody: are yellow", "title: Paris\nbody: is the capital of France",
                                "title: Markets\nbody: Stocks fell"]
    top = r.json()["results"][0]
    assert top["index"] == 1 and top["document"] == docs[1]  # the document as sent


def test_rank_fields_take_string_documents_as_their_text(client, scorer):
    r = client.post("/rerank", json={"query": "q", "documents": ["plain", {"text": "t", "x": 1}],
                                     "rank_fields": ["text", "x"]})
    assert r.status_code == 200, r.text
    assert scorer.texts[-1] == ["text: plain", "text: t\nx: 1"]


@pytest.mark.parametrize("body,field", [
    ({"documents": ["a", {"title": "no text"}]}, "documents.1"),  # no text and no rank_fields
    ({"documents": [{"title": "t"}, {"other": "o"}], "rank_fields": ["title"]}, "documents.1"),
    ({"documents": ["a"], "rank_fields": []}, "rank_fields"),
    ({"documents": ["a"], "rank_fields": ["t", "t"]}, "rank_fields"),
    ({"documents": ["a"], "max_chunks_per_doc": 10}, "max_chunks_per_doc"),
    ({"documents": ["a"], "priority": 5}, "priority"),
    ({"documents": ["a"], "top_k": 3}, "top_k"),  # unknown: refused, not ignored
    ({"documents": ["a"], "return_documents": "perhaps"}, "return_documents"),
])
def test_options_not_honoured_are_refused_naming_them(client, scorer, body, field):
    r = client.post("/v2/rerank", json={"query": "q", **body})
    assert r.status_code == 422, r.text
    assert field in [d["field"] for d in r.json()["detail"]] and field in r.json()["message"]
    assert scorer.calls == []


def test_unset_cohere_options_are_accepted(client, scorer):
    # what the SDKs send when the caller leaves an option out (null) or at Cohere's default
    r = rerank(client, "/v2/rerank", model="rerank-v3.5", top_n=None, max_chunks_per_doc=None, priority=0,
               rank_fields=None, max_tokens_per_doc=None)
    assert r.status_code == 200, r.text
    assert rerank(client, "/v2/rerank", max_tokens_per_doc=512).status_code == 200
    assert scorer.caps == [None, 512]


@pytest.mark.parametrize("path,version", [("/v1/rerank", "1"), ("/v2/rerank", "2"), ("/rerank", "2")])
def test_meta_has_cohere_api_version_and_billed_units(client, scorer, path, version):
    meta = rerank(client, path).json()["meta"]
    assert scorer.truncates == [False]  # Cohere's paths score long documents over windows
    assert meta["api_version"]["version"] == version
    assert meta["billed_units"] == {"search_units": 1}


@pytest.mark.parametrize("n,units", [(1, 1), (100, 1), (101, 2), (250, 3)])
def test_search_units_count_like_cohere(tmp_path, n, units):
    settings = make_app(tmp_path, max_documents=300, max_body_bytes=100_000)
    with TestClient(create_app(settings, WordOverlap())) as c:
        r = c.post("/rerank", json={"query": "q", "documents": [f"doc {i}" for i in range(n)]})
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["billed_units"]["search_units"] == units


# ---- one error shape ----------------------------------------------------------------------------------
def test_every_error_has_message_error_and_detail(tmp_path):
    settings = make_app(tmp_path)
    scorer = WordOverlap(broken=("base",))
    answers = {}
    with TestClient(create_app(settings, scorer), raise_server_exceptions=False) as c:
        answers[400] = c.post("/rerank", content=b'{"query": ', headers={"content-type": "application/json"})
        answers[401] = c.post("/v1/domains/legal/rollback")
        answers[404] = c.get("/v1/domains/unknown")
        answers[405] = c.get("/rerank")
        answers[409] = c.post("/v1/domains/legal/rollback", headers={"Authorization": f"Bearer {TOKEN}"})
        answers[413] = c.post("/rerank", json={"query": "q", "documents": ["x" * 20_000]})
        answers[422] = c.post("/rerank", json={"query": "q"})
        answers[4221] = c.post("/rerank", json={"query": "q", "documents": ["a"], "max_tokens_per_doc": 10**6})
        answers[500] = c.post("/rerank?domain=nomodel", json={"query": "q", "documents": ["a"]})  # base broken
    with TestClient(create_app(make_app(tmp_path / "noadmin", admin_token=None), WordOverlap())) as c:
        answers[403] = c.post("/v1/domains/legal/rollback")
    for status, r in answers.items():
        assert r.status_code == (422 if status == 4221 else status), (status, r.text)
        body = r.json()
        assert body["message"] and body["message"] == body["error"], (status, body)
        assert body["detail"] and all(d["field"] and d["message"] for d in body["detail"]), (status, body)
    assert answers[413].json()["detail"][0]["field"] == "body"
    assert answers[401].json()["detail"][0]["field"] == "authorization"
    assert answers[403].json()["detail"][0]["field"] == "authorization"
    assert answers[422].json()["detail"][0]["field"] == "documents"


def test_openapi_documents_the_error_shape_with_message(client):
    schema = client.get("/openapi.json").json()["components"]["schemas"]["ErrorBody"]
    assert {"message", "error", "detail"} <= set(schema["required"])


# ---- GET /v1/models ---------------------------------------------------------------------------------
def test_models_lists_the_domains_in_cohere_shape(client):
    body = client.get("/v1/models").json()
    by_name = {m["name"]: m for m in body["models"]}
    assert list(by_name) == ["default", "half", "legal"]
    assert by_name["legal"]["finetuned"] is True and by_name["legal"]["active_version"] == "legal@v1"
    assert by_name["default"]["finetuned"] is False and by_name["default"]["default_endpoints"] == ["rerank"]
    assert all(m["endpoints"] == ["rerank"] for m in body["models"])
    # the model that answers: legal@v1 (no max_length of its own: the server's 256), the base (128)
    assert (by_name["legal"]["context_length"], by_name["default"]["context_length"]) == (256, 128)
    assert "next_page_token" not in body


def test_models_options_are_honoured(client):
    first = client.get("/v1/models", params={"page_size": 2}).json()
    assert [m["name"] for m in first["models"]] == ["default", "half"]
    rest = client.get("/v1/models", params={"page_size": 2, "page_token": first["next_page_token"]}).json()
    assert [m["name"] for m in rest["models"]] == ["legal"] and "next_page_token" not in rest
    assert client.get("/v1/models", params={"endpoint": "chat"}).json()["models"] == []
    only = client.get("/v1/models", params={"endpoint": "rerank", "default_only": True}).json()
    assert [m["name"] for m in only["models"]] == ["default"]
    bad = client.get("/v1/models", params={"default_only": True})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "default_only"
    assert client.get("/v1/models/legal").json()["name"] == "legal"
    missing = client.get("/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["detail"][0]["field"] == "model"


# ---- TEI ------------------------------------------------------------------------------------------
def test_tei_rerank_shape_and_domain_from_the_url(client, scorer):
    r = client.post("/tei/legal/rerank", json={"query": "capital of France", "texts": DOCS, "return_text": True})
    assert r.status_code == 200, r.text
    ranks = r.json()
    assert [x["index"] for x in ranks][0] == 1 and scorer.calls[-1] == "legal@v1"
    assert [x["score"] for x in ranks] == sorted((x["score"] for x in ranks), reverse=True)
    assert all(x["text"] == DOCS[x["index"]] for x in ranks)
    plain = client.post("/tei/legal/rerank", json={"query": "capital of France", "texts": DOCS}).json()
    assert all(set(x) == {"index", "score"} for x in plain)


def test_tei_raw_scores_undo_the_activation(client):
    body = {"query": "capital of France", "texts": DOCS}
    served = {x["index"]: x["score"] for x in client.post("/tei/nomodel/rerank", json=body).json()}
    raw = {x["index"]: x["score"] for x in client.post("/tei/nomodel/rerank", json={**body, "raw_scores": True}).json()}
    # the base's manifest says bi-encoder: served = (cos + 1) / 2, raw = cos
    assert raw == pytest.approx({i: 2 * s - 1 for i, s in served.items()})


def test_raw_scores_invert_sigmoid_and_cosine():
    logits = np.array([-9.0, -1.5, 0.0, 2.0, 12.0], dtype=np.float32)
    served = (1 / (1 + np.exp(-logits))).astype(np.float32)
    # float32 scores near 1 keep few bits of the logit: about +-0.01 at 12
    assert raw_scores(served, {"kind": "cross-encoder", "activation": "sigmoid"}) == pytest.approx(logits, abs=0.01)
    assert raw_scores(np.float32([1.0]), {"kind": "cross-encoder"})[0] == pytest.approx(16.6, abs=0.1)  # saturated
    assert raw_scores([0.25, 0.9], {"kind": "bi-encoder"}) == pytest.approx([-0.5, 0.8])
    assert raw_scores([3.5], {"kind": "cross-encoder", "activation": "identity"}) == pytest.approx([3.5])


def test_tei_truncate_false_refuses_a_text_that_does_not_fit(client, scorer):
    long_text = "Paris is the capital of France. " * 4  # the fake scorer "truncates" past 8 words
    body = {"query": "capital of France", "texts": ["short text", long_text]}
    for truncate in (False, None):  # absent: TEI's default (no auto-truncate)
        r = client.post("/tei/legal/rerank", json={**body, **({} if truncate is None else {"truncate": truncate})})
        assert r.status_code == 413, r.text
        assert r.json()["detail"][0]["field"] == "texts" and "truncate=true" in r.json()["message"]
        assert "256 tokens" in r.json()["message"]  # legal@v1's manifest has no max_length: the server's
    ok = client.post("/tei/legal/rerank", json={**body, "truncate": True})
    assert ok.status_code == 200 and ok.json()[0]["index"] == 1
    assert scorer.truncates == [True, True, True]  # first window only, as TEI; never windows


@pytest.mark.parametrize("body,field", [
    ({"query": "q", "texts": []}, "texts"),
    ({"query": " ", "texts": ["a"]}, "query"),
    ({"query": "q", "texts": ["a"], "truncation_direction": "Left"}, "truncation_direction"),
    ({"query": "q", "texts": ["a"], "top_n": 1}, "top_n"),
    ({"query": "q", "texts": ["a"] * 6}, "texts"),  # over max_documents
])
def test_tei_bad_requests_name_the_field(client, body, field):
    r = client.post("/tei/legal/rerank", json=body)
    assert r.status_code == 422, r.text
    assert field in [d["field"] for d in r.json()["detail"]]


def test_tei_info_says_reranker(client):
    info = client.get("/tei/legal/info").json()
    assert list(info["model_type"]) == ["reranker"] and info["model_id"] == "legal" and info["model_sha"] == "v1"
    assert info["max_client_batch_size"] == 5 and info["max_input_length"] == 256
    assert client.get("/tei/nomodel/info").json()["max_input_length"] == 128  # the base's manifest
