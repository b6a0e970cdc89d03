"""No impression waits for an operator after a database outage: the spill file is replayed in the
background (serving/replayer.py), one replayer at a time, idempotently; its backlog is a metric, in
/readyz and in the A/B report.

The outage test stops and starts a real PostgreSQL (its own server: serving.local.LocalPostgres runs
.ci/postgres.sh on a free port, so that other tests using the CI server are not disturbed) under load from three clients against
two ingress apps ("replicas") on real HTTP (uvicorn), then checks that every answered request has exactly
one impression in the database, with no command run.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time

import httpx
import pytest
import uvicorn
from sqlalchemy import text

from serving.events import EVENTS_FAILED, EventLogger
from serving.ingress import create_app
from serving.local import LocalPostgres
from serving.replayer import SpillReplayer
from state import spill
from state.ab_report import ab_report
from state.settings import Settings
from state.store import Store
from tests.conftest import free_port
from tests.test_app_seam import WordOverlap
from tests.test_event_spill import closed_port_url, event, store, unavailable  # noqa: F401 - fixture

PG_URL = os.environ.get("RERANKER_TEST_PG_URL")


def events_of(domain: str, n: int, prefix: str):
    out = []
    for i in range(n):
        e = event(f"{prefix}{i}")
        e.domain = domain
        out.append(e)
    return out


def wait_until(cond, timeout_s: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s} s: {what}")
        time.sleep(0.1)


def test_backlog_counts_waiting_events_per_domain(tmp_path):
    path = tmp_path / "spill.jsonl"
    assert spill.backlog(path) == 0
    spill.append(path, events_of("a", 3, "a") + events_of("b", 2, "b"))
    assert (spill.backlog(path), spill.backlog(path, "a"), spill.backlog(path, "b")) == (5, 3, 2)
    with path.open("a") as f:
        f.write('{"request_id": "half", "dom')  # a line still being written is not counted yet
    assert spill.backlog(path) == 5
    with path.open("a") as f:
        f.write('ain": "a"}\n')
    assert spill.backlog(path, "a") == 4
    leftover = path.with_name(path.name + spill.REPLAYING)  # an unfinished replay's file counts too
    path.rename(leftover)
    spill.append(path, events_of("a", 1, "late"))
    assert spill.backlog(path, "a") == 5 and spill.backlog(path) == 7


def test_one_replay_at_a_time_and_the_ab_report_says_it_is_incomplete(store, tmp_path):
    path, quarantine = tmp_path / "spill.jsonl", tmp_path / "quarantine.jsonl"
    store.add_impressions(events_of("d", 2, "stored"))
    spill.append(path, events_of("d", 3, "spilled") + events_of("d", 1, "stored"))  # one already stored
    report = ab_report(store, "d", spill_path=path)
    assert report["incomplete"] is True and report["events_backlog"] == 4
    assert ab_report(store, "other", spill_path=path)["incomplete"] is False
    with spill._one_replay(path, wait=True):  # another process replays: this one leaves it alone
        assert spill.replay(store, path, quarantine, wait=False) is None
    assert spill.backlog(path) == 4 and store.count_impressions() == 2
    result = spill.replay(store, path, quarantine, wait=False)
    assert (result.stored, result.duplicates) == (3, 1)
    assert spill.replay(store, path, quarantine).stored == 0  # replayed twice: stored once
    report = ab_report(store, "d", spill_path=path)
    assert report["incomplete"] is False and report["events_backlog"] == 0
    assert report["arms"]["base"]["impressions"] == 5


def test_the_replayer_backs_off_while_the_store_is_down_and_drains_when_it_answers(store, tmp_path):
    path, quarantine = tmp_path / "spill.jsonl", tmp_path / "quarantine.jsonl"
    good = store.engine
    unavailable(store)
    replayer = SpillReplayer(store, path, quarantine, interval_s=0.05, max_backoff_s=0.4)
    spill.append(path, events_of("d", 4, "w"))
    replayer.start()
    try:
        wait_until(lambda: replayer.delay == 0.4, what="backoff up to its cap")
        assert replayer.backlog == spill.backlog(path) == 4  # kept (in the replay's leftover file)
        store.engine = good
        wait_until(lambda: store.count_impressions() == 4 and replayer.backlog == 0, what="the replay")
    finally:
        replayer.stop()
    assert replayer.delay == 0.05 and spill.backlog(path) == 0


def test_a_successful_write_wakes_a_backed_off_replayer(store, tmp_path):
    path, quarantine = tmp_path / "spill.jsonl", tmp_path / "quarantine.jsonl"
    spill.append(path, events_of("d", 2, "old"))
    replayer = SpillReplayer(store, path, quarantine, interval_s=3600, max_backoff_s=3600)  # never by time
    replayer.count()
    logger = EventLogger(store, max_delay_s=0.01, spill_path=path, quarantine_path=quarantine, replayer=replayer)
    replayer.start()
    try:
        async def run():
            logger.log(event("new"))
            await logger.close()

        asyncio.run(run())
        wait_until(lambda: store.count_impressions() == 3, what="the replay the write woke")
    finally:
        replayer.stop()


# ---- the outage, with a real PostgreSQL -----------------------------------------------------------
@pytest.fixture
def own_postgres():
    """A PostgreSQL server of this test's own (the CI server's binaries): stopped and started at will."""
    if not PG_URL:
        pytest.skip("RERANKER_TEST_PG_URL is not set: run .ci/postgres.sh and export the URL it prints")
    pg = LocalPostgres(free_port(), db="outage")
    pg.start()
    yield pg
    pg.remove()


class Replica:
    """One ingress app on real HTTP (uvicorn in a thread): what a Serve ingress replica runs."""

    def __init__(self, settings: Settings):
        self.app = create_app(settings, WordOverlap())
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, 30, "uvicorn start")
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def test_a_database_outage_under_load_loses_nothing_and_needs_no_command(own_postgres, tmp_path):
    pg = own_postgres
    url = pg.url
    settings = Settings(home=tmp_path, db_url=url, admin_token="t", spill_replay_s=0.5, spill_replay_max_s=2.0,
                        registry_cache_ttl_s=0)
    replicas = [Replica(settings), Replica(settings)]
    answered: list[str] = []
    refused: list[int] = []
    stop = threading.Event()

    def client(k: int) -> None:
        with httpx.Client(timeout=30) as c:
            i = 0
            while not stop.is_set():
                r = c.post(f"{replicas[(i + k) % 2].url}/rerank",
                           json={"query": f"capital of France {k} {i}", "documents": ["Paris is.", "Bananas."]})
                (answered.append(r.json()["id"]) if r.status_code == 200 else refused.append(r.status_code))
                i += 1
                time.sleep(0.01)

    failed_before = EVENTS_FAILED.labels(reason="store_error")._value.get()
    clients = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    for t in clients:
        t.start()
    try:
        time.sleep(2)
        pg.stop()  # the database goes away under load...
        time.sleep(3)
        backlog_seen = [httpx.get(f"{r.url}/readyz", timeout=30).json()["events_backlog"] for r in replicas]
        time.sleep(3)
        pg.start()  # ...and comes back; nobody runs `reranker events replay`
        time.sleep(3)
    finally:
        stop.set()
        for t in clients:
            t.join(60)
    try:
        spilled = EVENTS_FAILED.labels(reason="store_error")._value.get() - failed_before
        assert spilled > 0 and max(backlog_seen) > 0, "the outage spilled nothing: the test tested nothing"
        assert not refused and len(answered) == len(set(answered)) > 0
        store = Store(url)
        try:
            def stored() -> dict[str, int]:
                with store.engine.connect() as db:
                    return dict(db.execute(text("SELECT request_id, COUNT(*) FROM impressions GROUP BY request_id")).all())

            wait_until(lambda: len(stored()) >= len(answered) and spill.backlog(settings.spill_path) == 0, 90,
                       "every answered impression in the database")
            counts = stored()
            assert set(counts) == set(answered) and set(counts.values()) == {1}
        finally:
            store.close()
        for r in replicas:
            assert httpx.get(f"{r.url}/readyz", timeout=30).json()["events_backlog"] == 0
            metrics = httpx.get(f"{r.url}/metrics", timeout=30).text
            assert "reranker_events_backlog 0.0" in metrics
        assert not settings.quarantine_path.exists()
    finally:
        for r in replicas:
            r.stop()
