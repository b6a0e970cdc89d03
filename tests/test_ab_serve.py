"""A/B routing, impression logging and feedback on the real Ray Serve app (session fixture `service`)."""
from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from state.store import Store

DOMAIN = "abtest"
DOCS = ["The court dismissed the appeal.", "Contracts need consideration.", "Tort law covers negligence."]


@pytest.fixture(scope="module")
def store(service, settings):
    s = Store(settings.database_url)  # the service's own store
    yield s
    s.close()


@pytest.fixture(scope="module")
def domain_model(service):
    """A domain version built from the base model's files: a real ONNX model the pool can load."""
    version = service.publish_base_copy(DOMAIN, activate=True)
    model = f"{DOMAIN}@{version}"
    deadline = time.time() + 30
    with service.client() as c:  # wait until serving resolves the domain to it (registry cache TTL)
        while not _domain_arm_serves(c, model):
            if time.time() > deadline:
                pytest.fail("serving never picked up the domain version")
            time.sleep(0.5)
    return model


def _domain_arm_serves(c: httpx.Client, model: str) -> bool:
    for i in range(20):
        r = c.post(f"/rerank?domain={DOMAIN}", json={"query": "q", "documents": DOCS, "user_id": f"probe-{i}"})
        if r.json().get("model") == model:
            return True
    return False


def _send(c: httpx.Client, i: int, key: str) -> dict:
    body = {"query": f"question {i}", "documents": DOCS}
    headers = {}
    if i % 3 == 0:
        body["user_id"] = key
    elif i % 3 == 1:
        headers["X-User-Id"] = key
    else:
        headers["X-Session-Id"] = key
    r = c.post(f"/rerank?domain={DOMAIN}", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return {"key": key, **r.json()}


def _settled_count(store: Store, domain: str, quiet_s: float = 1.0) -> int:
    """The impression count once the loggers have written what they hold (no change for quiet_s)."""
    n, since = store.count_impressions(domain), time.time()
    while time.time() - since < quiet_s:
        time.sleep(0.2)
        m = store.count_impressions(domain)
        if m != n:
            n, since = m, time.time()
    return n


def _wait_count(store: Store, domain: str, want: int, timeout: float = 15) -> int:
    deadline = time.time() + timeout
    n = store.count_impressions(domain)
    while n < want and time.time() < deadline:
        time.sleep(0.2)
        n = store.count_impressions(domain)
    return n


def test_2000_requests_split_sticky_logged_and_reported(service, store, domain_model):
    before = _settled_count(store, DOMAIN)  # the fixture's probes, all written
    with service.client() as c:
        before_report = c.get(f"/v1/domains/{DOMAIN}/ab").json()["arms"]
    keys = [f"user-{k}" for k in range(200)]
    with service.client() as c, ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda i: _send(c, i, keys[i % 200]), range(2000)))

    # split and stickiness
    arms: dict[str, set[str]] = {}
    for r in responses:
        arms.setdefault(r["key"], set()).add(r["variant"])
        assert r["model"] == (domain_model if r["variant"] == "domain" else "base")
    share = sum(r["variant"] == "domain" for r in responses) / len(responses)
    assert 0.45 <= share <= 0.55, share
    assert all(len(v) == 1 for v in arms.values()), "a user key switched arms"

    # every request left exactly one impression
    assert _wait_count(store, DOMAIN, before + 2000) == before + 2000
    time.sleep(0.5)
    assert store.count_impressions(DOMAIN) == before + 2000

    with service.client() as c:
        report = c.get(f"/v1/domains/{DOMAIN}/ab").json()
    assert report["verdict"] in ("insufficient data", "no difference")  # no clicks yet

    # clicks: the domain arm's top result is clicked far more often
    rng = random.Random(7)
    clicked = {"base": 0, "domain": 0}
    feedback = []
    for r in responses:
        if rng.random() < (0.6 if r["variant"] == "domain" else 0.1):
            feedback.append((r["id"], r["results"][0]["index"]))
            clicked[r["variant"]] += 1
    with service.client() as c, ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda f: c.post("/v1/feedback", json={"request_id": f[0], "clicked": [f[1]]})
                              .status_code, feedback))
        assert set(codes) == {200}
        # idempotent repeat
        assert c.post("/v1/feedback", json={"request_id": feedback[0][0], "clicked": [feedback[0][1]]}
                      ).status_code == 200
        report = c.get(f"/v1/domains/{DOMAIN}/ab").json()
    arms_now = report["arms"]

    def delta(arm: str, key: str) -> int:
        return arms_now[arm][key] - before_report[arm][key]

    n_domain = sum(r["variant"] == "domain" for r in responses)
    assert delta("domain", "impressions") == n_domain
    assert delta("base", "impressions") == 2000 - n_domain
    assert delta("domain", "clicks") == clicked["domain"] and delta("base", "clicks") == clicked["base"]
    assert before_report["domain"]["clicks"] == 0  # so every click is at rank 0: MRR = CTR
    assert arms_now["domain"]["mrr"] == pytest.approx(arms_now["domain"]["ctr"])
    assert report["verdict"] == "domain better"
    assert store.count_clicks(DOMAIN) == len(feedback)


def test_feedback_errors_over_http(service, domain_model):
    with service.client() as c:
        r = c.post(f"/rerank?domain={DOMAIN}", json={"query": "q", "documents": DOCS, "top_n": 2})
        rid = r.json()["id"]
        assert c.post("/v1/feedback", json={"request_id": "0" * 32, "clicked": [0]}).status_code == 404
        bad = c.post("/v1/feedback", json={"request_id": rid, "clicked": [7]})
        assert bad.status_code == 422 and "clicked[0]" in bad.text
        missing = c.post("/v1/feedback", json={"clicked": [0]})
        assert missing.status_code == 422 and "request_id" in missing.text
        top = r.json()["results"][0]["index"]
        assert c.post("/v1/feedback", json={"request_id": rid, "clicked": [top]}).json()["clicked"] == [top]
        assert c.get("/v1/domains/Not-Valid!/ab").status_code in (404, 422)


def test_graceful_shutdown_after_burst_loses_no_impression(service, settings, store, domain_model):
    """Delete the app right after a burst (replicas shut down gracefully), then count; redeploy after."""
    from ray import serve

    from serving import local

    before = _settled_count(store, DOMAIN)
    with service.client() as c, ThreadPoolExecutor(16) as pool:
        sent = len(list(pool.map(lambda i: _send(c, i, f"burst-{i}"), range(300))))
    try:
        serve.delete(local.APP_NAME)  # blocks until the replicas ran their ASGI shutdown (logger drain)
        assert store.count_impressions(DOMAIN) - before == sent
    finally:  # later tests share the session service: bring it back
        local.deploy(settings)
        local.wait_ready(service.url, timeout_s=300)
