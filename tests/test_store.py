"""The event store on a real SQLite file and on the real PostgreSQL from .ci/postgres.sh."""
from __future__ import annotations

import os
import threading
import uuid

import pytest
from sqlalchemy import func, select, text

from state.db import Passage
from state.settings import Settings
from state.store import ImpressionEvent, InvalidClick, ShownPassage, Store, UnknownRequest

PG_URL = os.environ.get("RERANKER_TEST_PG_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'events.db'}")
    else:
        if not PG_URL:
            pytest.skip("RERANKER_TEST_PG_URL is not set: run .ci/postgres.sh and export the URL it prints")
        s = Store(PG_URL)
    yield s
    s.close()


def uid() -> str:
    return uuid.uuid4().hex


def event(domain: str, variant: str = "domain", texts=("alpha", "beta", "gamma"), rid: str | None = None,
          ids=None, latency=5.0, user=None) -> ImpressionEvent:
    # shown in reverse order: position 0 is the last document
    n = len(texts)
    shown = [ShownPassage(position=p, index=n - 1 - p, text=texts[n - 1 - p], score=1.0 - p / 10,
                          doc_id=(ids[n - 1 - p] if ids else None)) for p in range(n)]
    return ImpressionEvent(request_id=rid or uid(), domain=domain, variant=variant,
                           model=f"{domain}@v1" if variant == "domain" else "base", query="what is x?",
                           latency_ms=latency, n_documents=n, shown=shown, user_key=user)


def test_round_trip_and_passages_stored_once(store):
    d = f"t{uid()[:12]}"
    e1, e2 = event(d, user="u1"), event(d, "base", texts=("alpha", "beta", "delta"))
    assert store.add_impressions([e1, e2]) == 2
    assert store.add_impressions([e1]) == 0  # a replayed batch is a no-op, not an error
    rows = list(store.iter_impressions(d))
    assert [r["request_id"] for r in rows] == [e1.request_id, e2.request_id]
    r = rows[0]
    assert (r["domain"], r["variant"], r["model"], r["user_key"], r["query"]) == (d, "domain", f"{d}@v1", "u1",
                                                                                 "what is x?")
    assert [(s["position"], s["index"], s["text"]) for s in r["shown"]] == [(0, 2, "gamma"), (1, 1, "beta"),
                                                                           (2, 0, "alpha")]
    assert r["shown"][0]["score"] == pytest.approx(1.0) and r["clicked"] == []
    with store.engine.connect() as c:  # 4 distinct texts over 6 shown passages
        hashes = {s["text"] for row in rows for s in row["shown"]}
        from state.db import passage_hash
        n = c.execute(select(func.count()).select_from(Passage)
                      .where(Passage.hash.in_([passage_hash(t) for t in hashes]))).scalar_one()
    assert n == 4
    assert store.count_impressions(d) == 2


def test_clicks_validated_and_idempotent(store):
    d = f"t{uid()[:12]}"
    e = event(d, ids=["doc-a", "doc-b", "doc-c"])
    store.add_impressions([e])
    assert store.record_clicks(e.request_id, [2])["clicked"] == [2]
    assert store.record_clicks(e.request_id, [2, 2])["clicked"] == [2]  # repeat: no new row
    assert store.record_clicks(e.request_id, ["doc-a"])["clicked"] == [0, 2]  # by document id
    assert store.count_clicks(d) == 2
    with pytest.raises(UnknownRequest):
        store.record_clicks("no-such-request", [0])
    with pytest.raises(InvalidClick, match=r"clicked\[1\]: index 3 out of range"):
        store.record_clicks(e.request_id, [1, 3])
    with pytest.raises(InvalidClick, match="out of range"):
        store.record_clicks(e.request_id, [-1])
    with pytest.raises(InvalidClick, match="unknown document id"):
        store.record_clicks(e.request_id, ["doc-z"])
    assert store.count_clicks(d) == 2  # the valid 1 in [1, 3] was not half-stored
    assert list(store.iter_impressions(d))[0]["clicked"] == [0, 2]


def test_click_on_document_not_returned(store):
    d = f"t{uid()[:12]}"
    e = event(d)
    e.n_documents, e.shown = 5, e.shown[:1]  # top_n=1 of 5 documents
    store.add_impressions([e])
    with pytest.raises(InvalidClick, match="not in the returned results"):
        store.record_clicks(e.request_id, [0])
    assert store.record_clicks(e.request_id, [2])["clicked"] == [2]


def test_iter_pages_and_filters(store):
    d = f"t{uid()[:12]}"
    events = [event(d) for _ in range(23)]
    for i, e in enumerate(events):
        e.ts = 1000.0 + (i // 2)  # equal timestamps across page boundaries
    store.add_impressions(events)
    store.record_clicks(events[5].request_id, [0])
    got = [r["request_id"] for r in store.iter_impressions(d, batch=4)]
    assert sorted(got) == sorted(e.request_id for e in events) and len(got) == 23
    assert [r["request_id"] for r in store.iter_impressions(d, only_clicked=True)] == [events[5].request_id]
    assert len(list(store.iter_impressions(d, since=1005.0))) == 13


def test_concurrent_writers(store):
    d = f"t{uid()[:12]}"
    errors = []

    def writer():
        try:
            for _ in range(10):
                store.add_impressions([event(d, texts=("shared", f"x{uid()}")) for _ in range(5)])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert store.count_impressions(d) == 200


def test_sqlite_uses_wal_and_settings_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RERANKER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RERANKER_DB_URL", raising=False)
    s = Store(Settings().database_url)
    assert (tmp_path / "home" / "reranker.db").exists()
    with s.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
    s.close()


@pytest.mark.skipif(not PG_URL, reason="RERANKER_TEST_PG_URL is not set: run .ci/postgres.sh and export its URL")
def test_db_url_selects_postgresql(monkeypatch):
    monkeypatch.setenv("RERANKER_DB_URL", PG_URL)
    s = Store(Settings().database_url)
    assert s.engine.dialect.name == "postgresql"
    s.close()


def test_a_bad_row_is_refused_alone_and_nul_is_stored(store):
    """One transaction per batch, but a row the database refuses (a lone surrogate; on PostgreSQL also
    an over-long user key) costs only itself; NUL, which PostgreSQL text cannot hold, is U+FFFD."""
    d = f"t{uid()[:12]}"
    good = [event(d, user=f"u{i}") for i in range(4)]
    bad = [event(d, user="\ud800"), event(d, texts=("ok", "\udfff"))]
    if store.engine.dialect.name == "postgresql":
        bad.append(event(d, user="u" * 201))  # the column is varchar(200); SQLite ignores widths
    nul = event(d, texts=("a\x00b",))
    new, refused = store.add_impressions_each([good[0], bad[0], good[1], nul, *bad[1:], *good[2:]])
    assert new == 5 and [e.request_id for e, _ in refused] == [e.request_id for e in bad]
    assert all(reason for _, reason in refused)
    assert store.count_impressions(d) == 5
    stored = {i["request_id"]: i for i in store.iter_impressions(d)}
    assert stored[nul.request_id]["shown"][0]["text"] == "a\ufffdb"
    assert store.add_impressions_each(good) == (0, [])  # a replay: all already there
