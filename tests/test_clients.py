"""The client libraries RAG code reranks with, used as their users would, against the real service
(Ray Serve, the int8 base model): the cohere SDK (v1 Client, ClientV2), LangChain's CohereRerank,
LlamaIndex's CohereRerank and a TEI client. Each chooses a domain in one line, gets the Paris passage
first, and the service reports that domain (the domain's own model answers: its A/B split is 1.0)."""
from __future__ import annotations

import cohere
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

PARIS = "Paris is the capital and largest city of France."
DOCS = ["Bananas are yellow and rich in potassium.", "The stock market fell sharply on Tuesday.", PARIS,
        "Photosynthesis converts light into chemical energy in plants."]
QUERY = "What is the capital of France?"
DOMAIN = "clients"  # published below from the base model's version dir
MODEL_ID = f"{DOMAIN}@v1"
KEY = "unused"  # the SDKs want a key; rerank needs none


@pytest.fixture(scope="module")
def domain(service) -> str:
    reg = service.registry
    if reg.active_version(DOMAIN) is None:
        reg.publish_dir(DOMAIN, service.base_dir, activate=True)
        reg.update_config(DOMAIN, ab_split=1.0)
    return DOMAIN


def answered(service, domain: str = DOMAIN, model: str = MODEL_ID) -> float:
    """reranker_requests_total for (domain, model): what the service says it answered."""
    text = httpx.get(f"{service.url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        if family.name == "reranker_requests":
            return sum(s.value for s in family.samples if s.name.endswith("_total")
                       and s.labels.get("domain") == domain and s.labels.get("model") == model)
    return 0.0


# ---- cohere SDK ------------------------------------------------------------------------------------
def test_cohere_v1_client(service, domain):
    co = cohere.Client(api_key=KEY, base_url=service.url)
    r = co.rerank(model=domain, query=QUERY, documents=DOCS, top_n=2, return_documents=True)
    assert [x.index for x in r.results][0] == 2 and r.results[0].document.text == PARIS
    assert len(r.results) == 2
    assert (r.domain, r.model, r.variant) == (domain, MODEL_ID, "domain")  # extra keys the SDK keeps
    assert r.meta.api_version.version == "1" and r.meta.billed_units.search_units == 1


def test_cohere_v1_rank_fields(service, domain):
    co = cohere.Client(api_key=KEY, base_url=service.url)
    docs = [{"title": "Bananas", "body": DOCS[0]}, {"title": "France", "body": PARIS, "url": "https://x"},
            {"title": "Markets", "body": DOCS[1]}]
    r = co.rerank(model=f"domain:{domain}", query=QUERY, documents=docs, rank_fields=["title", "body"],
                  return_documents=True)
    assert r.results[0].index == 1 and r.results[0].document.url == "https://x"


def test_cohere_v2_client(service, domain):
    co = cohere.ClientV2(api_key=KEY, base_url=service.url)
    before = answered(service)
    r = co.rerank(model=domain, query=QUERY, documents=DOCS, top_n=3)
    assert r.results[0].index == 2 and len(r.results) == 3
    scores = [x.relevance_score for x in r.results]
    assert scores == sorted(scores, reverse=True)
    assert (r.domain, r.model) == (domain, MODEL_ID) and answered(service) == before + 1
    assert r.meta.api_version.version == "2" and r.meta.billed_units.search_units == 1
    # return_documents is our v2 extension: the SDK's way to send a key it does not know
    r = co.rerank(model=domain, query=QUERY, documents=DOCS, top_n=1,
                  request_options={"additional_body_parameters": {"return_documents": True}})
    assert r.results[0].document == {"text": PARIS}


def test_cohere_model_id_falls_back_and_a_disagreement_is_refused(service, domain):
    co = cohere.ClientV2(api_key=KEY, base_url=service.url)
    r = co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS,
                  request_options={"additional_query_parameters": {"domain": domain}})
    assert r.domain == domain and r.results[0].index == 2
    assert co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS).domain == "default"
    with pytest.raises(cohere.UnprocessableEntityError) as e:
        co.rerank(model=domain, query=QUERY, documents=DOCS,
                  request_options={"additional_query_parameters": {"domain": "medical"}})
    assert e.value.status_code == 422 and "'medical'" in e.value.body["message"]
    with pytest.raises(cohere.UnprocessableEntityError) as e:  # a Cohere option this service does not do
        co.rerank(model=domain, query=QUERY, documents=DOCS, priority=5)
    assert e.value.body["detail"][0]["field"] == "priority"


def test_cohere_lists_the_domains_as_models(service, domain):
    co = cohere.ClientV2(api_key=KEY, base_url=service.url)
    models = {m.name: m for m in co.models.list(endpoint="rerank").models}
    assert models[domain].finetuned and models[domain].endpoints == ["rerank"]
    assert models["default"].default_endpoints == ["rerank"]
    assert co.models.get(domain).name == domain


# ---- frameworks (they expose only model and base_url) ----------------------------------------------
def test_langchain_cohere_rerank(service, domain):
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    reranker = CohereRerank(model=domain, base_url=service.url, cohere_api_key=KEY, top_n=2)
    before = answered(service)
    out = reranker.compress_documents([Document(page_content=d) for d in DOCS], QUERY)
    assert [d.page_content for d in out][0] == PARIS and len(out) == 2
    assert out[0].metadata["relevance_score"] >= out[1].metadata["relevance_score"]
    assert answered(service) == before + 1  # the domain's model answered


def test_llama_index_cohere_rerank(service, domain):
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.postprocessor.cohere_rerank import CohereRerank

    reranker = CohereRerank(model=domain, base_url=service.url, api_key=KEY, top_n=2, max_retries=1)
    before = answered(service)
    nodes = reranker.postprocess_nodes([NodeWithScore(node=TextNode(text=d)) for d in DOCS],
                                       query_bundle=QueryBundle(QUERY))
    assert nodes[0].node.get_content() == PARIS and len(nodes) == 2
    assert answered(service) == before + 1


# ---- Hugging Face text-embeddings-inference ---------------------------------------------------------
def test_tei_client(service, domain):
    from tei_client import HttpClient

    tei = HttpClient(f"{service.url}/tei/{domain}", timeout=60)  # TEI serves one model per URL
    assert tei.info().server_model_id == domain
    before = answered(service)
    ranks = tei.rerank(query=QUERY, texts=DOCS, return_text=True, truncate=True).ranks
    assert ranks[0].index == 2 and ranks[0].text == PARIS
    assert [r.score for r in ranks] == sorted((r.score for r in ranks), reverse=True)
    assert answered(service) == before + 1
    raw = {r.index: r.score for r in tei.rerank(query=QUERY, texts=DOCS, raw_scores=True, truncate=True).ranks}
    # the base is a bi-encoder: the served score is (cos + 1) / 2, the raw score the cosine
    assert raw == pytest.approx({r.index: 2 * r.score - 1 for r in ranks}, abs=1e-5)


def test_tei_truncate_as_tei_does(service, domain):
    long_doc = "Paris is the capital of France. " + "Filler words about nothing at all. " * 100
    body = {"query": QUERY, "texts": [DOCS[0], long_doc]}
    with service.client() as c:
        refused = c.post(f"/tei/{domain}/rerank", json={**body, "truncate": False})
        cut = c.post(f"/tei/{domain}/rerank", json={**body, "truncate": True})
    assert refused.status_code == 413 and refused.json()["detail"][0]["field"] == "texts", refused.text
    assert "1 of 2" in refused.json()["message"]  # the real tokenizer found the one long text
    assert cut.status_code == 200 and cut.json()[0]["index"] == 1
