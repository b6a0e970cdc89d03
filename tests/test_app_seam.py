"""The HTTP app on its seam: `create_app(settings, scorer)` with a fake scorer, no Ray, no model.

Routing, validation, A/B assignment, fallback and error shapes in milliseconds; what needs a real
model and Ray Serve is in test_serving_http.py and test_domains_http.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from scoring.scorer import Scored
from serving.ingress import create_app
from state.registry import Registry
from state.settings import Settings
from state.store import Store

TOKEN = "seam-token"
DOCS = ["Bananas are yellow.", "Paris is the capital of France.", "Stocks fell today."]


class WordOverlap:
    """A Scorer: the share of query words in each document; `broken` model ids raise like a failed load."""

    def __init__(self, broken: tuple[str, ...] = ()):
        self.broken, self.calls, self.caps, self.warmed = broken, [], [], []

    async def score(self, model_id: str, query: str, documents: list[str],
                    max_tokens_per_doc: int | None = None) -> Scored:
        self.calls.append(model_id)
        self.caps.append(max_tokens_per_doc)
        if model_id in self.broken:
            raise RuntimeError(f"{model_id} failed to load: broken on purpose")
        q = set(query.lower().rstrip("?").split())
        words = [set(d.lower().rstrip(".").split()) for d in documents]
        return Scored(np.array([len(q & w) / len(q) for w in words], dtype=np.float32), 0, len(documents))

    async def warm(self, model_id: str) -> None:
        self.warmed.append(model_id)
        if model_id in self.broken:
            raise RuntimeError(f"{model_id} failed to load: broken on purpose")


def publish_fake(reg: Registry, domain: str, split: float | None) -> str:
    """A registered, active version (its files are never loaded: the fake scorer answers)."""
    staged = reg.stage(domain)
    (staged / "model.onnx").write_bytes(b"fake")
    version = reg.publish(domain, staged, {"kind": "bi-encoder"}, activate=True)
    if split is not None:
        reg.update_config(domain, ab_split=split)
    return version


@pytest.fixture
def app_parts(tmp_path):
    settings = Settings(home=tmp_path, admin_token=TOKEN, max_documents=5, max_body_bytes=10_000,
                        registry_cache_ttl_s=0)
    reg = Registry(settings.registry_root)
    publish_fake(reg, "legal", 1.0)
    publish_fake(reg, "half", 0.5)
    publish_fake(reg, "broken", 1.0)
    scorer = WordOverlap(broken=("broken@v1",))
    return settings, scorer


@pytest.fixture
def client(app_parts):
    settings, scorer = app_parts
    with TestClient(create_app(settings, scorer)) as c:
        yield c


def rerank(client, path="/rerank", **body):
    return client.post(path, json={"query": "capital of France", "documents": DOCS, **body})


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank", "/v2/rerank"])
def test_every_alias_ranks_and_maps_indices(client, path):
    r = rerank(client, path, top_n=2, return_documents=True)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["results"][0]["index"] == 1 and body["results"][0]["relevance_score"] == 1.0
    assert body["results"][0]["document"] == {"text": DOCS[1]}
    assert body["results"][1]["document"] == {"text": DOCS[body["results"][1]["index"]]}
    assert len(body["results"]) == 2 and body["meta"]["documents"] == 3


def test_max_tokens_per_doc_reaches_the_scorer(client, app_parts):
    _, scorer = app_parts
    body = rerank(client, max_tokens_per_doc=300).json()
    rerank(client)
    assert scorer.caps[-2:] == [300, None]  # None: the scorer's own default (RERANKER_DOC_TOKENS)
    assert body["meta"]["windows"] == 3 and body["meta"]["truncated_documents"] == 0


def test_domain_precedence_query_over_body_over_default(client):
    assert rerank(client).json()["domain"] == "default"
    assert rerank(client, domain="medical").json()["domain"] == "medical"
    r = client.post("/rerank?domain=legal", json={"query": "q", "documents": DOCS, "domain": "medical"})
    assert r.json()["domain"] == "legal"


def test_ab_arms_follow_the_split_and_stick_to_the_user(client, app_parts):
    body = rerank(client, "/rerank?domain=legal").json()  # split 1.0: always the domain model
    assert (body["variant"], body["model"]) == ("domain", "legal@v1") and "reason" not in body["meta"]
    nomodel = rerank(client, "/rerank?domain=nomodel").json()
    assert (nomodel["variant"], nomodel["meta"]["reason"]) == ("base", "no active domain model")
    arms = {}
    for i in range(200):
        key = f"user-{i}"
        first = rerank(client, "/rerank?domain=half", user_id=key).json()["variant"]
        again = client.post("/rerank?domain=half", json={"query": "q", "documents": DOCS},
                            headers={"X-User-Id": key}).json()["variant"]
        assert first == again, "a user key switched arms (body user_id and X-User-Id are the same key)"
        arms[key] = first
    share = sum(v == "domain" for v in arms.values()) / len(arms)
    assert 0.35 <= share <= 0.65, share
    # the scorer was asked for exactly the model the response names
    _, scorer = app_parts
    assert scorer.calls.count("half@v1") == 2 * sum(v == "domain" for v in arms.values())


def test_a_domain_model_that_fails_falls_back_to_the_base(client):
    body = rerank(client, "/rerank?domain=broken").json()
    assert body["variant"] == "base" and body["model"] == "base"
    assert "broken@v1 failed to load" in body["meta"]["reason"]
    assert body["results"][0]["index"] == 1


@pytest.mark.parametrize("path,body,field", [
    ("/rerank", {"documents": ["a"]}, "query"),
    ("/rerank", {"query": " ", "documents": ["a"]}, "query"),
    ("/rerank", {"query": "q", "documents": []}, "documents"),
    ("/rerank", {"query": "q", "documents": ["a", 5]}, "documents.1"),
    ("/rerank", {"query": "q", "documents": ["a"] * 6}, "documents"),
    ("/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
    ("/rerank", {"query": "q", "documents": ["a"], "max_tokens_per_doc": 0}, "max_tokens_per_doc"),
    ("/rerank", {"query": "q", "documents": ["a"], "max_tokens_per_doc": 10**6}, "max_tokens_per_doc"),
    ("/rerank", {"query": "q", "documents": ["a"], "domain": "../etc"}, "domain"),
    ("/rerank?domain=Bad!", {"query": "q", "documents": ["a"]}, "domain"),
])
def test_validation_errors_name_the_field(client, path, body, field):
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert field in [d["field"] for d in r.json()["detail"]] and field in r.json()["error"]


def test_one_422_for_a_bad_domain_id_on_every_route(client):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for method, path, kw in [("get", "/v1/domains/Bad!", {}), ("get", "/v1/domains/Bad!/ab", {}),
                             ("put", "/v1/domains/Bad!", {"json": {"ab_split": 0.5}, "headers": auth}),
                             ("post", "/v1/domains/Bad!/promote", {"json": {"version": "1"}, "headers": auth}),
                             ("post", "/v1/domains/Bad!/train/reranker", {"json": {"search_logs": True},
                                                                         "headers": auth}),
                             ("get", "/v1/jobs?domain=Bad!", {})]:
        r = getattr(client, method)(path, **kw)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["detail"][0]["field"] == "domain", (path, r.json())


def test_error_shapes_malformed_json_size_and_auth(client):
    bad = client.post("/rerank", content=b'{"query": ', headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"].startswith("malformed JSON")
    big = client.post("/rerank", json={"query": "q", "documents": ["x" * 20_000]})
    assert big.status_code == 413 and "limit" in big.json()["error"]
    assert client.post("/v1/domains/legal/rollback").status_code == 401
    r = client.post("/v1/domains/legal/rollback", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 409 and "no earlier version" in r.json()["error"]
    assert client.get("/v1/domains/unknown").status_code == 404


def test_openapi_documents_errors_and_the_domain_pattern(client):
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/rerank"]["post"]
    assert {"400", "413", "422"} <= set(post["responses"])
    assert post["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    domain_param = next(p for p in post["parameters"] if p["name"] == "domain")
    assert "^[a-z0-9]" in str(domain_param["schema"])
    promote = spec["paths"]["/v1/domains/{domain}/promote"]["post"]
    assert {"401", "403", "404", "409", "422"} <= set(promote["responses"])


def test_every_answer_is_logged_once_and_feedback_finds_it(app_parts):
    settings, scorer = app_parts
    with TestClient(create_app(settings, scorer)) as c:
        ids = [rerank(c, "/rerank?domain=legal", user_id=f"u{i}").json()["id"] for i in range(5)]
        assert c.post("/v1/feedback", json={"request_id": ids[0], "clicked": [1]}).status_code == 200
    store = Store(settings.database_url)  # the app shut down: its logger drained into the store
    try:
        assert store.count_impressions("legal") == 5 and store.count_clicks("legal") == 1
    finally:
        store.close()


def test_promote_loads_the_version_in_the_pool_before_the_registry_flips(app_parts):
    settings, scorer = app_parts
    reg = Registry(settings.registry_root)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for _ in range(2):  # legal@v2 (good) and legal@v3 (its load fails in the pool)
        staged = reg.stage("legal")
        (staged / "model.onnx").write_bytes(b"fake")
        reg.publish("legal", staged, {"kind": "bi-encoder"})
    scorer.broken = ("legal@v3",)
    with TestClient(create_app(settings, scorer)) as c:
        r = c.post("/v1/domains/legal/promote", json={"version": "v2"}, headers=auth)
        assert r.status_code == 200 and r.json()["active"] == "v2", r.text
        assert scorer.warmed == ["legal@v2"]
        assert rerank(c, "/rerank?domain=legal").json()["model"] == "legal@v2"  # no stale cache in this replica
        r = c.post("/v1/domains/legal/promote", json={"version": "3"}, headers=auth)
        assert r.status_code == 409 and "legal@v3" in r.json()["error"] and "broken on purpose" in r.json()["error"]
        assert reg.active_version("legal") == "v2"
        assert c.post("/v1/domains/legal/promote", json={"version": "9"}, headers=auth).status_code == 404
