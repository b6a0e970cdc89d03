"""Deadline, token bound, load shedding and drain on the app's seam (`create_app` with fake scorers, no
Ray): statuses, Retry-After, and what is logged. The same paths through real Ray Serve, with replica
kills and SIGTERM, are in test_availability.py."""
from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from scoring.scorer import Scored, TooManyTokens
from serving.ingress import create_app
from serving.overload import Unavailable
from state.registry import Registry
from state.settings import Settings
from state.store import Store
from tests.test_app_seam import publish_fake

DOCS = ["Paris is the capital of France.", "Bananas are yellow."]


class Scripted:
    """A Scorer whose answer per model id is scripted: a delay, an exception, or scores."""

    def __init__(self, delay: float = 0.0, error: Exception | None = None, release: threading.Event | None = None):
        self.delay, self.error, self.release = delay, error, release
        self.calls: list[str] = []
        self.cancelled = 0
        self.started = threading.Event()

    async def score(self, model_id, query, documents, max_tokens_per_doc=None, truncate=False) -> Scored:
        self.calls.append(model_id)
        self.started.set()
        try:
            if self.release is not None:
                while not self.release.is_set():
                    await asyncio.sleep(0.01)
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.error is not None:
            raise self.error
        return Scored(np.linspace(0.9, 0.1, len(documents)).astype(np.float32), 0, len(documents))


def settings_for(tmp_path, **kw) -> Settings:
    return Settings(home=tmp_path, admin_token="t", registry_cache_ttl_s=0, retry_after_s=3, **kw)


def impressions(settings: Settings, domain: str) -> int:
    store = Store(settings.database_url)
    try:
        return store.count_impressions(domain)
    finally:
        store.close()


def errors_counted(domain: str, status: int) -> float:
    return REGISTRY.get_sample_value("reranker_errors_total", {"domain": domain, "status": str(status)}) or 0.0


def rerank(c, domain="d"):
    return c.post(f"/rerank?domain={domain}", json={"query": "capital of France", "documents": DOCS})


def test_deadline_answers_503_with_retry_after_cancels_the_scoring_and_logs_nothing(tmp_path):
    s = settings_for(tmp_path, request_timeout_s=0.2)
    scorer = Scripted(delay=30)
    with TestClient(create_app(s, scorer)) as c:
        r = rerank(c)
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "3" and "0.2 s request deadline" in r.json()["error"]
    assert scorer.cancelled == 1  # the work under the request was cancelled, not left running
    assert impressions(s, "d") == 0


@pytest.mark.parametrize("error,status,text", [
    (TooManyTokens(250_000, 1100, 200_000), 413, "over the per-request bound of 200000"),
    (Unavailable("server: overloaded, queue full", 3), 503, "overloaded"),
])
def test_size_and_load_errors_are_not_retried_on_the_base_and_log_nothing(tmp_path, error, status, text):
    s = settings_for(tmp_path)
    publish_fake(Registry(s.registry_root), "legal", 1.0)  # the domain arm would fall back to the base
    scorer = Scripted(error=error)
    # the counters are process-wide (other tests count errors on "legal" too): compare before and after
    before = errors_counted("legal", status)
    with TestClient(create_app(s, scorer)) as c:
        r = rerank(c, "legal")
    assert r.status_code == status, r.text
    assert text in r.json()["error"]
    if status == 413:
        assert r.json()["detail"][0]["field"] == "documents" and "RERANKER_MAX_REQUEST_TOKENS" in r.json()["error"]
    else:
        assert r.headers["retry-after"] == "3"
    assert scorer.calls == ["legal@v1"]  # no second try on the base
    assert errors_counted("legal", status) == before + 1
    assert impressions(s, "legal") == 0


def test_drain_refuses_new_requests_and_lets_the_one_in_flight_finish(tmp_path):
    s = settings_for(tmp_path)
    release = threading.Event()
    scorer = Scripted(release=release)
    with TestClient(create_app(s, scorer)) as c:
        drain = c.app.state.drain
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("r", rerank(c)))
        t.start()
        assert scorer.started.wait(30)
        drain.start()  # what the runner's switch does on SIGTERM
        refused, ready = rerank(c), c.get("/readyz")
        health, metrics = c.get("/healthz"), c.get("/metrics")
        assert drain.in_flight == 1
        release.set()
        t.join(30)
        assert drain.in_flight == 0
    answered = result["r"]
    assert answered.status_code == 200, answered.text
    assert refused.status_code == 503 and refused.headers["retry-after"] == "3"
    assert "stopping" in refused.json()["error"] and refused.headers["connection"] == "close"
    assert ready.status_code == 503
    assert health.status_code == 200 and metrics.status_code == 200
    assert scorer.calls == ["base"]  # the refused request never reached the scorer
    assert impressions(s, "d") == 1


def test_an_impression_is_logged_only_once_its_response_was_sent(tmp_path):
    """A response the server could not send (the client left) leaves no impression; one it sent does."""
    s = settings_for(tmp_path)
    app = create_app(s, Scripted())
    body = json.dumps({"query": "capital of France", "documents": DOCS}).encode()

    async def call(fail_send: bool) -> list[dict]:
        sent, delivered = [], False

        async def receive():
            nonlocal delivered
            if delivered:
                await asyncio.sleep(3600)
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            if fail_send and message["type"] == "http.response.body":
                raise OSError("client disconnected")
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/rerank", "raw_path": b"/rerank", "query_string": b"domain=d",
                 "root_path": "", "headers": [(b"content-type", b"application/json"),
                                              (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        try:
            await app(scope, receive, send)
        except OSError:
            pass
        return sent

    async def run() -> None:
        await call(fail_send=True)
        await app.state.events.flush()
        assert impressions(s, "d") == 0
        sent = await call(fail_send=False)
        assert sent[0]["status"] == 200
        await app.state.events.flush()
        assert impressions(s, "d") == 1
        await app.state.events.close()
        app.state.store.close()

    asyncio.run(run())
