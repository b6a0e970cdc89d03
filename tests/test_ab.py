"""A/B assignment, the impression logger, feedback validation and the A/B report (no Ray)."""
from __future__ import annotations

import asyncio
import json
import random
import time
import uuid

import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from serving.ab import assign_arm, choose, user_key
from state.settings import Settings
from serving.events import EVENTS_FAILED, EventLogger
from serving.routes import feedback
from state.ab_report import MIN_IMPRESSIONS_PER_ARM, ab_report
from state.store import ImpressionEvent, ShownPassage, Store


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'events.db'}")
    yield s
    s.close()


def ev(domain="legal", variant="domain", n=3, latency=5.0, rid=None, ids=None) -> ImpressionEvent:
    shown = [ShownPassage(position=p, index=p, text=f"passage {p} of {domain}", score=1 - p / 10,
                          doc_id=ids[p] if ids else None) for p in range(n)]
    return ImpressionEvent(request_id=rid or uuid.uuid4().hex, domain=domain, variant=variant,
                           model="legal@v1" if variant == "domain" else "base", query="q",
                           latency_ms=latency, n_documents=n, shown=shown)


# ---- assignment ---------------------------------------------------------------------------
def two(split: float) -> dict[str, float]:
    """Champion vs base, `split` to the domain arm (a domain without a challenger)."""
    return {"domain": split, "base": 1 - split}


def test_assignment_split_and_sticky():
    keys = [f"user-{i}" for i in range(200)]
    seen: dict[str, set[str]] = {k: set() for k in keys}
    arms = []
    for i in range(2000):
        k = keys[i % 200]
        a = assign_arm("legal", k, two(0.5))
        seen[k].add(a)
        arms.append(a)
    share = arms.count("domain") / len(arms)
    assert 0.45 <= share <= 0.55, share
    assert all(len(s) == 1 for s in seen.values())  # every key always on one arm


def test_assignment_edges_and_salt():
    assert {assign_arm("legal", f"k{i}", two(0.0)) for i in range(100)} == {"base"}
    assert {assign_arm("legal", f"k{i}", two(1.0)) for i in range(100)} == {"domain"}
    # 0.2 split lands near 20%
    share = sum(assign_arm("legal", f"k{i}", two(0.2)) == "domain" for i in range(2000)) / 2000
    assert 0.16 <= share <= 0.24
    # the domain salts the hash: a user's arms in two domains are not the same coin
    same = sum(assign_arm("legal", f"k{i}", two(.5)) == assign_arm("medical", f"k{i}", two(.5)) for i in range(1000))
    assert 400 <= same <= 600
    # no key: a fresh coin per request, both arms appear
    random.seed(1)
    assert {assign_arm("legal", None, two(0.5)) for _ in range(100)} == {"base", "domain"}


def test_user_key_precedence_and_choose():
    assert user_key("body", "h", "s") == "body"
    assert user_key(None, "h", "s") == "h"
    assert user_key("", None, "s") == "s"
    assert user_key(None) is None
    one = Settings(ab_split=1.0)
    no_model = choose("legal", None, "k", one)  # no domain model -> base, and it says why
    assert (no_model.variant, no_model.model_id, no_model.reason) == ("base", "base", "no active domain model")
    arm = choose("legal", {"active": "v3", "ab_split": None}, "k", one)  # default split 1.0: domain
    assert (arm.variant, arm.model_id, arm.reason) == ("domain", "legal@v3", None)
    # the domain's own split wins over the default
    assert choose("legal", {"active": "v3", "ab_split": 0.0}, "k", one).variant == "base"


# ---- logger -------------------------------------------------------------------------------
def test_logger_burst_then_shutdown_loses_nothing(store):
    async def main():
        logger = EventLogger(store, max_batch=64, max_delay_s=5.0)  # long delay: only close() flushes
        for _ in range(1500):
            logger.log(ev())
        assert logger.stats()["pending"] == 1500  # log() only enqueued: nothing was written yet
        await logger.close()
        return logger.stats()

    stats = asyncio.run(main())
    assert store.count_impressions("legal") == 1500  # count before shutdown == count stored
    assert stats == {"pending": 0, "stored": 1500, "failed": 0}


def test_logger_batches_by_time_and_from_threads(store):
    async def main():
        logger = EventLogger(store, max_batch=1000, max_delay_s=0.05)
        logger.start()
        await asyncio.gather(*(asyncio.to_thread(logger.log, ev()) for _ in range(20)))  # sync callers
        for _ in range(10):
            logger.log(ev())
        await asyncio.sleep(0.5)  # no flush(), no close(): the timer alone writes them
        n = store.count_impressions("legal")
        await logger.close()
        return n

    assert asyncio.run(main()) == 30


def test_logger_counts_and_spills_what_it_cannot_store(store, tmp_path):
    spill = tmp_path / "failed.jsonl"
    with store.engine.begin() as c:  # a real store failure: the table is gone
        c.execute(text("DROP TABLE shown"))
    before = EVENTS_FAILED.labels(reason="store_error")._value.get()

    async def main():
        logger = EventLogger(store, max_delay_s=0.01, retries=1, spill_path=spill)
        for _ in range(7):
            logger.log(ev())
        await logger.close()
        return logger.stats()

    stats = asyncio.run(main())
    assert stats["failed"] == 7 and stats["stored"] == 0
    assert EVENTS_FAILED.labels(reason="store_error")._value.get() - before == 7
    assert len(spill.read_text().splitlines()) == 7
    # repaired store: `reranker events replay` stores the spilled events, none lost, and only once
    from cli.main import app
    from state.db import create_tables
    create_tables(store.engine)
    res = CliRunner().invoke(app, ["events", "replay", "--file", str(spill), "--db-url", store.url])
    assert res.exit_code == 0 and "stored 7 new impression events" in res.output, res.output
    assert store.count_impressions("legal") == 7
    res = CliRunner().invoke(app, ["events", "replay", "--file", str(spill), "--db-url", store.url])
    assert res.exit_code == 0 and "nothing to replay" in res.output  # the file was renamed *.replayed


# ---- feedback route -----------------------------------------------------------------------
@pytest.fixture
def client(store):
    app = FastAPI()
    app.state.store = store
    app.include_router(feedback.router)
    with TestClient(app) as c:
        yield c


def test_feedback_validation(client, store):
    e = ev(ids=["a", "b", "c"])
    store.add_impressions([e])
    r = client.post("/v1/feedback", json={"request_id": e.request_id, "clicked": [1, "c"]})
    assert r.status_code == 200 and r.json() == {"request_id": e.request_id, "clicked": [1, 2]}
    r = client.post("/v1/feedback", json={"request_id": e.request_id, "clicked": [1]})  # repeat
    assert r.status_code == 200 and r.json()["clicked"] == [1, 2]
    assert store.count_clicks("legal") == 2
    r = client.post("/v1/feedback", json={"request_id": "nope", "clicked": [0]})
    assert r.status_code == 404 and "request_id" in r.text
    r = client.post("/v1/feedback", json={"request_id": e.request_id, "clicked": [0, 9]})
    assert r.status_code == 422 and "clicked[1]" in r.text and "out of range" in r.text
    for bad, field in (({"clicked": [0]}, "request_id"), ({"request_id": e.request_id, "clicked": []}, "clicked"),
                       ({"request_id": e.request_id, "clicked": [1.5]}, "clicked"),
                       ({"request_id": e.request_id, "clicked": [True]}, "clicked")):
        r = client.post("/v1/feedback", json=bad)
        assert r.status_code == 422, bad
        assert field in r.text, r.text
    assert store.count_clicks("legal") == 2


def test_feedback_finds_an_impression_still_in_the_queue(store):
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        app.state.events = EventLogger(store, max_delay_s=30.0)  # would not flush on its own for 30 s
        app.state.events.start()
        yield
        await app.state.events.close()

    app = FastAPI(lifespan=lifespan)
    app.state.store = store
    app.include_router(feedback.router)

    @app.post("/_log")
    async def _log(body: dict):
        app.state.events.log(ev(rid=body["id"]))

    with TestClient(app) as c:
        c.post("/_log", json={"id": "fresh-1"})
        t0 = time.perf_counter()
        r = c.post("/v1/feedback", json={"request_id": "fresh-1", "clicked": [0]})
        assert r.status_code == 200 and time.perf_counter() - t0 < 5
    assert store.count_clicks("legal") == 1


# ---- report -------------------------------------------------------------------------------
def fill(store, domain, n_base, n_domain, ctr_base, ctr_domain, click_pos=0, seed=0):
    rng = random.Random(seed)
    clicks = {"base": 0, "domain": 0}
    for variant, n, ctr in (("base", n_base, ctr_base), ("domain", n_domain, ctr_domain)):
        evs = [ev(domain, variant, latency=float(i % 100)) for i in range(n)]
        store.add_impressions(evs)
        for e in evs:
            if rng.random() < ctr:
                store.record_clicks(e.request_id, [click_pos, 2])  # first click decides MRR
                clicks[variant] += 1
    return clicks


def test_report_counts_and_verdicts(store):
    clicks = fill(store, "flip", 300, 300, 0.10, 0.40, click_pos=1)
    r = ab_report(store, "flip")
    assert r["arms"]["base"]["impressions"] == 300 and r["arms"]["domain"]["impressions"] == 300
    assert r["arms"]["base"]["clicks"] == clicks["base"] and r["arms"]["domain"]["clicks"] == clicks["domain"]
    assert r["arms"]["domain"]["ctr"] == pytest.approx(clicks["domain"] / 300)
    assert r["arms"]["domain"]["mrr"] == pytest.approx(clicks["domain"] / 300 * 0.5)  # first click at rank 2
    assert r["arms"]["base"]["latency_ms_mean"] == pytest.approx(sum(i % 100 for i in range(300)) / 300)
    assert 93 <= r["arms"]["base"]["latency_ms_p95"] <= 95
    c = r["comparison"]
    assert c["ci95"][0] < c["ctr_diff"] < c["ci95"][1] and c["ci95"][0] > 0 and c["p_value"] < 1e-6
    assert r["verdict"] == "domain better"

    fill(store, "rev", 300, 300, 0.40, 0.10, seed=1)
    assert ab_report(store, "rev")["verdict"] == "base better"
    fill(store, "same", 300, 300, 0.25, 0.25, seed=2)
    assert ab_report(store, "same")["verdict"] == "no difference"
    fill(store, "small", MIN_IMPRESSIONS_PER_ARM - 1, 300, 0.1, 0.9, seed=3)
    assert ab_report(store, "small")["verdict"] == "insufficient data"
    empty = ab_report(store, "nothing")
    assert empty["verdict"] == "insufficient data" and empty["arms"]["base"]["ctr"] is None


def test_ab_route_and_cli(client, store, tmp_path):
    fill(store, "legal", 120, 120, 0.1, 0.5)
    r = client.get("/v1/domains/legal/ab")
    assert r.status_code == 200 and r.json()["verdict"] == "domain better"
    assert client.get("/v1/domains/Bad!/ab").status_code == 422

    from cli import ab
    app = typer.Typer()
    app.callback()(lambda: None)
    ab.register(app)
    res = CliRunner().invoke(app, ["ab", "legal", "--json", "--db-url", store.url])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["arms"]["domain"]["impressions"] == 120
    res = CliRunner().invoke(app, ["ab", "legal", "--db-url", store.url])
    assert "verdict: domain better" in res.output


def test_log_rerank_hook_records_what_was_shown(store):
    """The contract with RerankService: log_rerank(response, request, texts, objs, scores, user_key, ms)."""
    from serving.protocol import DocumentIn, RerankRequest, RerankResponse, RerankResult

    req = RerankRequest(query="contract law", documents=["a", {"id": "d1", "text": "b"}, "c"], top_n=2)
    objs = [None, req.documents[1], None]
    resp = RerankResponse(id="req-hook-1", model="legal@v2", domain="legal", variant="domain",
                          results=[RerankResult(index=1, relevance_score=0.9), RerankResult(index=2, relevance_score=0.4)],
                          meta={"documents": 3, "windows": 3, "truncated_documents": 0, "latency_ms": 1.0,
                                "api_version": {"version": "2"}, "billed_units": {"search_units": 1}})
    assert isinstance(req.documents[1], DocumentIn)

    async def main():
        logger = EventLogger(store)
        logger.log_rerank(resp, req, ["a", "b", "c"], objs, [0.1, 0.9, 0.4], "user-7", 12.5)
        await logger.close()

    asyncio.run(main())
    (row,) = list(store.iter_impressions("legal"))
    assert (row["request_id"], row["model"], row["variant"], row["user_key"], row["query"], row["n_documents"]) \
        == ("req-hook-1", "legal@v2", "domain", "user-7", "contract law", 3)
    assert [(s["position"], s["index"], s["doc_id"], s["text"]) for s in row["shown"]] == \
        [(0, 1, "d1", "b"), (1, 2, None, "c")]
    assert row["latency_ms"] == 12.5


def test_install_wires_app_state_and_drains_on_shutdown(tmp_path):
    """serving.events.install(app, settings): what the ingress calls; ASGI shutdown stores the queue."""
    from serving import events
    from state.settings import Settings

    settings = Settings(home=tmp_path / "home", db_url=None)
    app = FastAPI()
    events.install(app, settings)
    app.include_router(feedback.router)

    @app.post("/_burst")
    async def _burst():
        for i in range(300):
            app.state.events.log(ev(rid=f"burst-{i}"))

    with TestClient(app) as c:
        c.post("/_burst")
        assert c.post("/v1/feedback", json={"request_id": "burst-7", "clicked": [0]}).status_code == 200
    store = Store(settings.database_url)
    assert store.count_impressions("legal") == 300  # every logged impression survived the shutdown
    assert store.count_clicks("legal") == 1
    store.close()
