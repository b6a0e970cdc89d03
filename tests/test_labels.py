"""Expert labels in the store (SQLite and the CI's PostgreSQL): queue order, grades, export, and the
training source that reads them; traffic counts and the A/B timeline on the same stores."""
from __future__ import annotations

import csv

import pytest

from state.ab_report import ab_report, ab_timeline
from state.db import passage_hash
from state.labels import InvalidLabel, LabelStore, query_hash
from state.store import ImpressionEvent, ShownPassage
from tests.test_store import store, uid  # noqa: F401 - the store fixture (sqlite + postgresql)
from training.sources.labels import load_labels
from training.sources.stored_labels import examples_from_store


def shown_event(domain: str, query: str, texts: list[str], scores: list[float], ts: float | None = None,
                variant: str = "domain") -> ImpressionEvent:
    """texts/scores in rank order (position 0 first)."""
    kw = {"ts": ts} if ts is not None else {}
    return ImpressionEvent(request_id=uid(), domain=domain, variant=variant, model="base", query=query,
                           latency_ms=3.0, n_documents=len(texts),
                           shown=[ShownPassage(position=p, index=p, text=t, score=s, doc_id=f"d-{t}")
                                  for p, (t, s) in enumerate(zip(texts, scores))], **kw)


@pytest.fixture
def logged(store):  # noqa: F811
    d = f"lab{uid()[:10]}"
    store.add_impressions(
        [shown_event(d, "frequent query", ["a", "b", "c"], [0.9, 0.2, 0.1]) for _ in range(3)]
        + [shown_event(d, "close call", ["b", "d"], [0.51, 0.50])]
        + [shown_event(d, "single", ["e"], [0.7])]
        + [shown_event("other", "frequent query", ["x"], [0.3])])
    return store, d


def test_queue_orders_and_shows_the_passages(logged):
    store, d = logged
    labels = LabelStore(store)
    freq = labels.queue(d, "frequent")
    assert [i["query"] for i in freq] == ["frequent query", "single", "close call"]  # ties: newest first
    assert freq[0]["impressions"] == 3
    assert [p["text"] for p in freq[0]["passages"]] == ["a", "b", "c"]
    assert freq[0]["passages"][0]["passage_id"] == passage_hash("a") and freq[0]["passages"][0]["doc_id"] == "d-a"
    unsure = labels.queue(d, "uncertain")
    assert [i["query"] for i in unsure] == ["close call", "frequent query", "single"]
    assert unsure[0]["margin"] == pytest.approx(0.01, abs=1e-6) and unsure[2]["margin"] is None
    assert len(labels.queue(d, "frequent", limit=1, passages=2)[0]["passages"]) == 2


def test_grades_validate_replace_and_leave_the_queue(logged):
    store, d = logged
    labels = LabelStore(store)
    ids = {t: passage_hash(t) for t in "abcde"}
    with pytest.raises(InvalidLabel, match="labels.1.passage_id"):
        labels.grade(d, "frequent query", [(ids["a"], 5), (ids["e"], 1)], "ann")  # e was not shown for it
    with pytest.raises(InvalidLabel, match="relevance"):
        labels.grade(d, "frequent query", [(ids["a"], 6)], "ann")
    with pytest.raises(InvalidLabel, match="not a logged query"):
        labels.grade(d, "never asked", [(ids["a"], 3)], "ann")
    assert labels.summary(d)["labels"] == 0  # nothing half-stored
    assert labels.grade(d, "frequent query", [(ids["a"], 5), (ids["b"], 2), (ids["c"], 1)], "ann") == 3
    assert labels.grade(d, "frequent query", [(ids["a"], 4)], "bob") == 1
    assert labels.grade(d, "frequent query", [(ids["b"], 3)], "ann") == 1  # ann changes her mind: replaced
    s = labels.summary(d)
    assert (s["labels"], s["queries"], s["pairs"]) == (4, 1, 3)
    assert s["labellers"] == {"ann": 3, "bob": 1} and s["relevance"] == {"1": 1, "2": 0, "3": 1, "4": 1, "5": 1}
    pending = labels.queue(d, "frequent")
    assert "frequent query" not in [i["query"] for i in pending]  # every shown passage graded
    everything = labels.queue(d, "frequent", pending_only=False)
    done = next(i for i in everything if i["query"] == "frequent query")
    assert done["passages"][0]["labels"] == {"ann": 5, "bob": 4}
    rows = {r["document"]: r for r in labels.export_rows(d)}
    assert rows["a"]["relevance"] == 5 and rows["a"]["labellers"] == 2  # mean 4.5 rounds half up
    assert rows["b"]["relevance"] == 3 and rows["c"]["relevance"] == 1 and rows["a"]["doc_id"] == "d-a"
    assert LabelStore(store).summary("other")["labels"] == 0


def test_export_is_what_training_reads_and_the_store_source_matches(logged, tmp_path):
    store, d = logged
    labels = LabelStore(store)
    labels.grade(d, "close call", [(passage_hash("b"), 4), (passage_hash("d"), 1)], "ann")
    rows = labels.export_rows(d)
    path = tmp_path / "labels.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    from_file, st_file = load_labels(path)
    from_store, st_store = examples_from_store(store, d)
    key = lambda e: (e.query_id, e.passage, e.label, e.doc_id)  # noqa: E731
    assert sorted(map(key, from_file)) == sorted(map(key, from_store))
    assert st_store == st_file == {"pairs": 2, "queries": 1, "relevance": {"1": 1, "2": 0, "3": 0, "4": 1, "5": 0}}
    assert {e.source for e in from_store} == {"expert_labels"}
    assert from_store[0].query_id == "label-" + query_hash("close call")[:16]


def test_traffic_and_timeline(store):  # noqa: F811
    d = f"traf{uid()[:10]}"
    now = 1_700_000_000.0
    store.add_impressions([shown_event(d, "q", ["a"], [0.5], ts=now - 30),
                           shown_event(d, "q", ["a"], [0.5], ts=now - 1800, variant="base"),
                           shown_event(d, "q", ["a"], [0.5], ts=now - 7200),
                           shown_event(d, "q", ["a"], [0.5], ts=now - 3 * 86400)])
    assert store.traffic(now)[d] == {"last_hour": 2, "last_day": 3, "total": 4}
    clicked = list(store.iter_impressions(d))[-1]["request_id"]  # the newest (domain arm, now - 30)
    store.record_clicks(clicked, [0])
    t = ab_timeline(store, d, now - 3 * 3600, now, 3600)
    assert [(b["base"]["impressions"], b["domain"]["impressions"], b["domain"]["clicks"]) for b in t["buckets"]] \
        == [(0, 0, 0), (0, 1, 0), (1, 1, 1)]
    with pytest.raises(ValueError, match="buckets"):
        ab_timeline(store, d, now - 86400 * 30, now, 60)


def test_report_intervals_contain_the_estimates(store):  # noqa: F811
    d = f"ci{uid()[:10]}"
    evs = [shown_event(d, "q", ["a", "b"], [0.6, 0.4], variant="base") for _ in range(40)]
    store.add_impressions(evs)
    for e in evs[:10]:
        store.record_clicks(e.request_id, [1])  # rank 2: reciprocal rank 0.5
    arm = ab_report(store, d)["arms"]["base"]
    assert arm["ctr"] == pytest.approx(0.25) and arm["mrr"] == pytest.approx(0.125)
    lo, hi = arm["ctr_ci95"]
    assert 0.1 < lo < 0.25 < hi < 0.45  # Wilson, n = 40
    lo, hi = arm["mrr_ci95"]
    assert 0 < lo < 0.125 < hi < 0.25
    assert ab_report(store, d)["arms"]["domain"]["ctr_ci95"] is None


def test_dev_qrels_keep_binary_and_graded_sources_apart():
    """Expert grades (1 = not relevant) beside binary sources: each example is read on its own scale."""
    from training.bm25 import BM25Index
    from training.config import TrainConfig
    from training.examples import Example
    from training.pipeline import DataSpec, _heldout

    ex = [Example("b1", "alpha query", "alpha passage", 1.0, "beir", "d1"),
          Example("b2", "beta query", "beta passage", 1.0, "search_logs", "d2"),
          Example("g1", "gamma query", "gamma passage", 5.0, "expert_labels", "d3"),
          Example("g1", "gamma query", "delta passage", 1.0, "expert_labels", "d4")]
    corpus = {e.doc_id: e.passage for e in ex}
    _, dev, _ = _heldout(ex, DataSpec(), TrainConfig(dev_fraction=1.0, eval_k=4), corpus, BM25Index(corpus))
    assert dev.qrels == {"b1": {"d1": 1}, "b2": {"d2": 1}, "g1": {"d3": 4, "d4": 0}}
    # corpus-less sources: each query's candidates are its judged set, for every system
    assert set(dev.queries) == set(dev.qrels) and set(dev.candidates["g1"]) == {"d3", "d4"} and dev.judged == 3
