"""Availability through real Ray Serve: the token bound and the deadline end to end, a pool replica
killed under load while versions are promoted and rolled back, and SIGTERM under load.

The replica kill and the SIGTERM run against their own service (`python -m serving.main`, what `make
serve` runs, with its own local Ray), never the session's. No timing is asserted: statuses, counts,
and that every response a client received has exactly one stored impression and nothing else is
stored.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, free_port, make_tarball

# WordPiece splits these into ~2 tokens per 3 characters: many tokens in a small body
DENSE = " ".join(f"x{i % 10}q{i % 7}" for i in range(800))
FILLER = "The committee discussed the budget for the next fiscal year and agreed on procedural matters. "


# ---- the scorer: bound and stop --------------------------------------------------------------------
def test_token_bound_counts_every_window_before_inference(base_version):
    from scoring.scorer import TooManyTokens, VersionScorer

    scorer = VersionScorer(base_version, threads=1)
    docs = [FILLER * 30, FILLER * 30]  # ~550 tokens each: 3 windows each at 256
    first_windows = scorer.score("budget", docs, truncate=True)  # what a one-window-per-doc count would see
    full = scorer.score("budget", docs)
    assert full.windows > first_windows.windows == 2
    bound = 2 * 256 + 10  # above two single windows, below every window
    calls = []
    scorer._infer = lambda feed, run=scorer._infer: calls.append(1) or run(feed)
    with pytest.raises(TooManyTokens) as e:
        scorer.score("budget", docs, max_total_tokens=bound)
    assert e.value.windows == full.windows and e.value.tokens > bound and str(bound) in str(e.value)
    assert calls == []  # refused before any inference
    assert scorer.score("budget", docs, max_tokens_per_doc=100, max_total_tokens=bound).windows == 2


def test_scoring_stops_between_batches(base_version):
    from scoring.scorer import Stopped, VersionScorer

    scorer = VersionScorer(base_version, threads=1, batch_size=2)
    asked = []

    def stop() -> bool:  # let one batch run, then stop
        asked.append(1)
        return len(asked) > 1

    with pytest.raises(Stopped):
        scorer.score("q", [f"passage {i}" for i in range(8)], stop=stop)
    assert len(asked) == 2


# ---- the session service --------------------------------------------------------------------------
def test_token_bound_over_http_names_the_bound_and_honours_the_per_document_cap(service, settings):
    docs = [DENSE] * 40
    with service.client() as c:
        big = c.post("/rerank?domain=tokenbound", json={"query": "q", "documents": docs})
        capped = c.post("/rerank?domain=tokenbound", json={"query": "q", "documents": docs, "max_tokens_per_doc": 60})
    assert big.status_code == 413, big.text
    assert f"bound of {settings.max_request_tokens}" in big.json()["error"]
    assert big.json()["detail"][0]["field"] == "documents"
    assert capped.status_code == 200, capped.text
    assert capped.json()["meta"]["windows"] == 40


def test_a_client_that_leaves_gets_no_impression(service, settings):
    """Serve cancels the request of a client that disconnects: no response is sent, nothing is logged."""
    from state.store import Store

    heavy = {"query": "budget", "documents": [FILLER * 45] * 40}  # ~160 windows: seconds of scoring
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{service.url}/rerank?domain=leaver", json=heavy, timeout=0.3)
    time.sleep(2)
    with service.client() as c:
        answered = c.post("/rerank?domain=leaver", json={"query": "q", "documents": ["a", "b"]}).json()["id"]
    store = Store(settings.database_url)
    try:
        wait_for(lambda: store.has_impression(answered), 60, "the answered request's impression")
        time.sleep(1)
        assert store.count_impressions("leaver") == 1
    finally:
        store.close()


def test_pool_client_deadline_stops_the_replica_and_answers_unavailable(service):
    """The deadline travels to the replica: with no time left it stops before scoring (Stopped), which
    the ingress side turns into Unavailable (503 + Retry-After)."""
    from ray import serve

    from serving import overload
    from serving.local import APP_NAME
    from serving.pool import PoolClient

    client = PoolClient(serve.get_deployment_handle("RerankerPool", app_name=APP_NAME), retry_after_s=2)

    async def late():
        with overload.deadline(0.0):
            return await client.score("base", "q", [FILLER * 20] * 8)

    with pytest.raises(overload.Unavailable) as e:
        asyncio.run(late())
    assert e.value.retry_after_s == 2 and "deadline" in str(e.value)


# ---- a service of its own: replica kill, promote/rollback, SIGTERM -------------------------------------
@dataclass
class Runner:
    proc: object
    url: str
    home: Path
    admin: dict = field(default_factory=lambda: {"Authorization": f"Bearer {ADMIN_TOKEN}"})

    def stored_ids(self, domains: set[str]) -> list[str]:
        from state.store import Store

        store = Store(f"sqlite:///{self.home / 'reranker.db'}")
        try:
            return [i["request_id"] for d in domains for i in store.iter_impressions(d)]
        finally:
            store.close()


@pytest.fixture(scope="module")
def runner(base_version, tmp_path_factory):
    from serving import local

    home = tmp_path_factory.mktemp("runner-home")
    shutil.copytree(base_version, home / "models" / "_base" / base_version.name)  # no second export
    port = free_port()
    proc = local.start_runner(home, port, env={
        "RERANKER_ADMIN_TOKEN": ADMIN_TOKEN, "RERANKER_REGISTRY_CACHE_TTL_S": "0.5",
        "RERANKER_MAX_DOCUMENTS": "100", "RERANKER_MAX_BODY_BYTES": "1000000",
        "RERANKER_MAX_REQUEST_TOKENS": "500000", "RERANKER_REQUEST_TIMEOUT_S": "120",
        "RERANKER_DRAIN_GRACE_S": "120"})
    url = f"http://127.0.0.1:{port}"
    try:
        local.wait_ready(url, timeout_s=900, proc=proc)
        yield Runner(proc, url, home)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=180)
            except Exception:  # noqa: BLE001
                proc.kill()


@dataclass
class Outcome:
    started: float
    ended: float
    status: int | None  # None: the transport failed (connection cut, refused, ...)
    request_id: str | None = None
    model: str | None = None
    retry_after: str | None = None
    error: str | None = None


class Clients:
    """A few clients sending reranks in a loop until stopped (or, with stop_on_503, until refused)."""

    def __init__(self, url: str, bodies: list[tuple[str, dict]], n: int = 3, stop_on_503: bool = False,
                 fresh_documents: bool = False):
        # fresh_documents: every request's passages are new text, so no request is answered from the
        # embedding cache or store (a cached request is too short to catch in flight)
        self.url, self.bodies, self.stop_on_503, self.fresh = url, bodies, stop_on_503, fresh_documents
        self.stop = threading.Event()
        self.outcomes: list[list[Outcome]] = [[] for _ in range(n)]
        self.current: list[float | None] = [None] * n  # when each client's request in progress started
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(n)]

    def __enter__(self) -> "Clients":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=600)

    def _loop(self, i: int) -> None:
        k = 0
        while not self.stop.is_set():
            domain, body = self.bodies[k % len(self.bodies)]
            k += 1
            if self.fresh:
                body = {**body, "documents": [f"Item {i}.{k}.{j}. {d}" for j, d in enumerate(body["documents"])]}
            t0 = time.monotonic()
            self.current[i] = t0
            try:
                # a new connection per request: a cut shows as an error, not as a stale keep-alive
                r = httpx.post(f"{self.url}/rerank", params={"domain": domain}, timeout=600,
                               json={**body, "user_id": f"c{i}-{k}"})
                ok = r.status_code == 200
                out = Outcome(t0, time.monotonic(), r.status_code, r.json()["id"] if ok else None,
                              r.json()["model"] if ok else None, r.headers.get("retry-after"),
                              None if ok else r.text[:200])
            except httpx.HTTPError as e:
                out = Outcome(t0, time.monotonic(), None, error=f"{type(e).__name__}: {e}")
            self.current[i] = None
            self.outcomes[i].append(out)
            if out.status is None or (self.stop_on_503 and out.status == 503):
                return

    @property
    def all(self) -> list[Outcome]:
        return [o for per in self.outcomes for o in per]

    def answered(self, since: float = 0.0, model: str | None = None) -> int:
        return sum(1 for o in self.all if o.status == 200 and o.ended >= since and (model is None or o.model == model))


def wait_for(cond, timeout: float = 300, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


def wait_stored(runner: Runner, domains: set[str], expected: set[str], timeout: float = 60) -> list[str]:
    """The stored ids once they stop changing (the logger writes batches every 0.2 s)."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        ids = runner.stored_ids(domains)
        if set(ids) == expected or ids == last:
            return ids
        last = ids
        time.sleep(1)
    return runner.stored_ids(domains)


def test_pool_replica_killed_under_load_with_promote_and_rollback(runner, base_version, tmp_path):
    from serving.local import replica_pids

    tar = make_tarball(base_version, tmp_path / "v.tar.gz").read_bytes()
    with httpx.Client(base_url=runner.url, headers=runner.admin, timeout=300) as admin:
        for activate in (True, False):
            r = admin.post("/v1/domains/faults/versions", params={"activate": activate}, content=tar,
                           headers={"content-type": "application/gzip"})
            assert r.status_code == 201, r.text
        pids = replica_pids(runner.proc.pid, "RerankerPool")
        assert len(pids) == 2, pids  # the default: two pool replicas
        query = {"query": "capital of France",
                 "documents": ["Paris is the capital of France.", FILLER * 3, "Bananas are yellow."] * 4}
        domains = {"faults", "faults-base"}
        with Clients(runner.url, [("faults", query), ("faults-base", query)]) as clients:
            wait_for(lambda: clients.answered() >= 6, what="warm-up answers")
            os.kill(pids[0], signal.SIGKILL)
            killed_at = time.monotonic()
            wait_for(lambda: clients.answered(since=killed_at) >= 6, what="answers after the kill")
            assert admin.post("/v1/domains/faults/promote", json={"version": "v2"}).status_code == 200
            promoted_at = time.monotonic()
            wait_for(lambda: clients.answered(promoted_at, "faults@v2") >= 2, what="answers from v2")
            assert admin.post("/v1/domains/faults/rollback").status_code == 200
            rolled_at = time.monotonic()
            wait_for(lambda: clients.answered(rolled_at, "faults@v1") >= 2, what="answers from v1 again")
        # Serve replaced the killed replica
        wait_for(lambda: len(set(replica_pids(runner.proc.pid, "RerankerPool")) - {pids[0]}) == 2, 300,
                 "a new replica in place of the killed one")

    outcomes = clients.all
    failed = [o for o in outcomes if o.status != 200]
    print(f"replica kill + promote + rollback: {len(outcomes) - len(failed)} answered, {len(failed)} refused (503)")
    assert all(o.status == 503 and o.retry_after for o in failed), failed  # never a 500 or a cut connection
    received = [o.request_id for o in outcomes if o.status == 200]
    assert len(received) == len(set(received))
    stored = wait_stored(runner, domains, set(received))
    assert sorted(stored) == sorted(received)  # exactly one impression per answer, none for anything else


def test_sigterm_drains_in_flight_requests_then_exits(runner):
    heavy = {"query": "budget", "documents": [FILLER * 45] * 40}  # ~3 windows per document
    with Clients(runner.url, [("drain", heavy)], stop_on_503=True, fresh_documents=True) as clients:
        wait_for(lambda: clients.answered() >= 3, 600, "warm-up answers")

        def long_in_flight() -> bool:
            now = time.monotonic()
            return any(t is not None and now - t > 0.5 for t in clients.current)

        wait_for(long_in_flight, 600, "a request in flight")
        sigterm_at = time.monotonic()
        runner.proc.send_signal(signal.SIGTERM)
        for t in clients.threads:  # every client stops at its first 503
            t.join(timeout=600)
        rc = runner.proc.wait(timeout=600)

    assert rc == 0
    outcomes = clients.all
    assert all(o.status is not None for o in outcomes), [o.error for o in outcomes if o.status is None]
    in_flight = [o for o in outcomes if o.started < sigterm_at < o.ended]
    assert in_flight and all(o.status in (200, 503) for o in in_flight)
    assert any(o.status == 200 for o in in_flight)  # the request that was running at SIGTERM was answered
    for per_client in clients.outcomes:  # each client was refused once, politely, and stopped
        assert per_client[-1].status == 503 and per_client[-1].retry_after, per_client[-1]
        assert all(o.status == 200 for o in per_client[:-1])
    received = [o.request_id for o in outcomes if o.status == 200]
    # the service has exited: whatever it stored is in the database now
    assert sorted(runner.stored_ids({"drain"})) == sorted(received)
    log = (runner.home / "serve.log").read_text()
    assert "every request in flight answered" in log
