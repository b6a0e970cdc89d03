"""Small contracts of the probe: TEI's flags are strict booleans, a 405 names every method of its path, and
the spec says what the server enforces on rank_fields. On the app's seam (no Ray)."""
from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from serving.ingress import create_app
from state.settings import Settings
from tests.test_app_seam import WordOverlap

NOT_BOOLEANS = ["yes", "off", "true", 0, 1, None]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("contracts"), admin_token="t")
    with TestClient(create_app(settings, WordOverlap())) as c:
        yield c


@pytest.mark.parametrize("flag", ["truncate", "raw_scores", "return_text"])
def test_tei_flags_are_strict_booleans(client, flag):
    body = {"query": "capital of France", "texts": ["Paris is the capital of France.", "Bananas."]}
    for value in NOT_BOOLEANS:
        if flag == "truncate" and value is None:
            continue  # truncate may be null: TEI's "absent"
        r = client.post("/tei/default/rerank", json={**body, flag: value})
        assert r.status_code == 422, (flag, value, r.text)
        assert [d["field"] for d in r.json()["detail"]] == [flag]
    # (raw_scores=true reads the served model's manifest, which this seam has none of)
    for value in (False,) if flag == "raw_scores" else (True, False):
        assert client.post("/tei/default/rerank", json={**body, flag: value}).status_code == 200


def test_a_405_lists_every_method_of_the_path(client):
    spec = client.get("/openapi.json").json()
    checked = 0
    for template, item in spec["paths"].items():
        path = re.sub(r"\{[^}]+\}", lambda m: {"{version}": "v1", "{job_id}": "train-x-1"}.get(m.group(0), "legal"),
                      template)
        methods = {m.upper() for m in item}
        missing = next((m for m in ("PATCH", "PUT", "DELETE", "GET") if m not in methods), None)
        if missing is None:
            continue
        r = client.request(missing, path)
        assert r.status_code == 405, (missing, path, r.status_code)
        allowed = {m.strip() for m in r.headers["allow"].split(",")}
        assert allowed == methods, (path, allowed, methods)
        checked += 1
    assert checked > 20
    # the three the probe found, by name
    for method, path, allowed in (("DELETE", "/v1/domains", "GET, POST"), ("PATCH", "/v1/domains/legal", "GET, PUT"),
                                  ("PUT", "/v1/domains/legal/uploads", "GET, POST")):
        assert client.request(method, path).headers["allow"] == allowed


def test_the_spec_says_rank_fields_are_distinct_and_named(client):
    props = client.get("/openapi.json").json()["components"]["schemas"]["RerankRequest"]["properties"]
    field = props["rank_fields"]
    array = next(b for b in field["anyOf"] if b.get("type") == "array")
    assert field.get("uniqueItems", array.get("uniqueItems")) is True
    assert array["items"]["minLength"] == 1 and array["minItems"] == 1
    docs = [{"text": "a", "title": "x"}]
    for bad in (["title", "title"], [""], [" "]):  # what the spec now forbids, the server refuses
        r = client.post("/v2/rerank", json={"query": "q", "documents": docs, "rank_fields": bad})
        assert r.status_code == 422 and r.json()["detail"][0]["field"].startswith("rank_fields"), bad
