"""The lexical side of the domain model (scoring/lexical.py, scoring/fusion.py): language detection,
per-language analysis, numpy BM25 against bm25s, the stored statistics, the z-sum fusion."""
from __future__ import annotations

import math
import subprocess
import sys

import bm25s
import numpy as np
import pytest

from scoring.fusion import Fusion, LexicalPart, LocalLexical, fuse, fused_raw, znorm
from scoring.lexical import Analyzer, LexicalScorer, LexicalStats, bm25, detect_language, idf
from training.fusion_fit import fit_lexical_weight

EN = ["Aspirin reduces the risk of heart attacks in adults with diabetes.",
      "The patients were treated with aspirin and their blood pressure was measured.",
      "Vitamin D deficiency is common among elderly people living in nursing homes.",
      "Heart failure patients benefit from regular exercise and a low salt diet.",
      "Statins lower cholesterol and the risk of cardiovascular events."]
DE = ["Die Patienten wurden mit Aspirin behandelt und der Blutdruck wurde gemessen.",
      "Das Gericht hat die Klage abgewiesen, weil die Frist nicht eingehalten wurde.",
      "Der Vermieter darf die Miete nur unter bestimmten Voraussetzungen erhöhen."]
JA = ["東京は日本の首都であり、最大の都市です。", "富士山は日本で一番高い山です。",
      "京都には多くの寺院と神社があります。", "大阪はたこ焼きで有名な都市です。"]


def test_detect_language_by_script_and_stopwords():
    assert detect_language(EN) == "en"
    assert detect_language(DE) == "de"
    assert detect_language(JA) == "ja"
    assert detect_language(["2024 1234"]) == "en"  # no words at all: the default


def test_analyzers_per_language():
    en = Analyzer("en")
    assert en("The patients running tests") == ["patient", "run", "test"]  # stopwords out, stemmed
    de = Analyzer("de")
    toks = de("Die Patienten wurden behandelt")
    assert "die" not in toks and "patient" in toks  # German stopwords and the German stemmer
    ja = Analyzer("ja")
    assert ja("東京タワー") == ["東", "京", "タ", "ワ", "ー", "東京", "京タ", "タワ", "ワー"]
    mixed = ja("日本のGDPは2023年")
    assert "gdp" in mixed and "2023" in mixed and "日本" in mixed  # non-CJK runs stay words
    assert Analyzer.from_config(ja.config()) == ja


@pytest.mark.parametrize("language,corpus,query", [
    ("en", EN, "aspirin heart attack risk"), ("de", DE, "Aspirin Blutdruck"), ("ja", JA, "日本の首都")])
def test_numpy_bm25_equals_bm25s_on_the_same_tokens(language, corpus, query):
    an = Analyzer(language)
    docs = an.batch(corpus)
    stats = LexicalStats.fit(docs, an)
    retriever = bm25s.BM25(k1=stats.k1, b=stats.b, method="lucene")
    retriever.index(docs, show_progress=False)
    q = [t for t in an(query) if t in retriever.vocab_dict]
    assert q
    ours = bm25(q, docs, stats)
    theirs = retriever.get_scores(q)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert ours.max() > 0


def test_unknown_terms_get_the_largest_idf():
    an = Analyzer("en")
    stats = LexicalStats.fit(an.batch(EN), an)
    unknown = stats.idf(["zzzunseen"])[0]
    assert unknown == pytest.approx(math.log(1 + (stats.n_docs + 0.5) / 0.5))
    assert unknown > stats.idf(["aspirin"])[0] > stats.idf(["risk"])[0] - 1e-9
    assert idf(np.array([0]), stats.n_docs)[0] == pytest.approx(unknown)
    # a passage that holds the unknown query term outranks one that does not
    s = LexicalScorer(an, stats)("zzzunseen aspirin", ["aspirin zzzunseen", "aspirin"])
    assert s[0] > s[1] > 0


def test_stats_round_trip_and_stable_bytes(tmp_path):
    an = Analyzer("ja")
    stats = LexicalStats.fit(an.batch(JA), an)
    a, b = tmp_path / "a.json.gz", tmp_path / "b.json.gz"
    stats.save(a)
    stats.save(b)
    assert a.read_bytes() == b.read_bytes()  # same statistics, same bytes (sha256 in the manifest)
    back = LexicalStats.load(a)
    assert back == stats
    assert back.analyzer.language == "ja" and back.df == stats.df


def test_zsum_fusion_properties():
    neural = np.array([0.9, 0.5, 0.1, 0.4])
    lexical = np.array([0.0, 7.0, 1.0, 2.0])
    z = znorm(neural)
    assert z.mean() == pytest.approx(0) and z.std() == pytest.approx(1)
    assert znorm(np.ones(3)).tolist() == [0, 0, 0]  # constant: no information, no division by zero
    # weight 0 or 1 gives one side's order; the score is invariant to either side's scale and shift
    assert np.argsort(-fuse(neural, lexical, (1, 0))).tolist() == np.argsort(-neural).tolist()
    assert np.argsort(-fuse(neural, lexical, (0, 1))).tolist() == np.argsort(-lexical).tolist()
    np.testing.assert_allclose(fuse(neural, lexical, (0.6, 0.4)), fuse(3 * neural + 1, lexical / 5, (0.6, 0.4)),
                               rtol=1e-6)
    raw = fused_raw(neural, lexical, (0.6, 0.4))
    assert raw.sum() == pytest.approx(0, abs=1e-9)  # centred on the request's documents
    f = fuse(neural, lexical, (0.6, 0.4))
    assert f.dtype == np.float32 and ((f > 0) & (f < 1)).all()


def test_fusion_file_round_trip_and_refuses_unknown(tmp_path):
    f = Fusion.with_lexical_weight(0.25, {"queries": 3})
    f.save(tmp_path / "fusion.json")
    back = Fusion.load(tmp_path / "fusion.json")
    assert back.weights == (0.75, 0.25) and back.lexical_weight == 0.25
    (tmp_path / "bad.json").write_text('{"format": 1, "type": "ltr", "features": ["neural", "lexical"]}')
    with pytest.raises(ValueError, match="ltr"):
        Fusion.load(tmp_path / "bad.json")


def test_local_lexical_weights_by_language():
    local = LocalLexical(weight=0.35, weight_uncovered=0.7, languages=frozenset({"en"}))
    assert local.weight_for("en") == 0.35 and local.weight_for("ja") == 0.7
    assert LocalLexical(languages=None).weight_for("ja") == 0.35
    part = LexicalPart(local=local)
    scores, w = part("aspirin heart", EN)
    assert w == pytest.approx((0.65, 0.35)) and scores[0] == scores.max() > 0
    _, w = part("日本の首都", JA)
    assert w == pytest.approx((0.3, 0.7))  # an English-only base on Japanese: BM25 leads
    assert part("aspirin", EN[:1]) is None  # one document: nothing to normalise over
    assert LexicalPart(local=LocalLexical(weight=0.0))("aspirin", EN) is None  # weight 0: neural alone
    assert not LexicalPart().active


def test_domain_part_uses_stored_statistics_not_the_request():
    an = Analyzer("en")
    stats = LexicalStats.fit(an.batch(EN), an)
    part = LexicalPart(stats, Fusion.with_lexical_weight(0.2))
    docs = ["aspirin and heart", "statins and heart"]
    scores, w = part("aspirin heart", docs)
    np.testing.assert_allclose(scores, bm25(an("aspirin heart"), an.batch(docs), stats))
    assert w == (0.8, 0.2)
    with pytest.raises(ValueError):
        LexicalPart(stats, None)


def test_fit_lexical_weight_picks_the_better_side():
    # the lexical score ranks the relevant passage first, the neural one last: all the weight to lexical
    neural = {"q1": {"a": 0.1, "b": 0.9, "c": 0.5}, "q2": {"a": 0.2, "b": 0.8, "c": 0.7}}
    lexical = {"q1": {"a": 5.0, "b": 1.0, "c": 0.0}, "q2": {"a": 3.0, "b": 0.0, "c": 1.0}}
    qrels = {"q1": {"a": 1}, "q2": {"a": 1}}
    w, table = fit_lexical_weight(neural, lexical, qrels)
    assert table[f"{w:.2f}"] == pytest.approx(1.0) and w > 0.5
    assert table["0.00"] < 1.0


def test_serving_scoring_imports_neither_torch_nor_bm25s():
    code = ("import sys, scoring.scorer, scoring.fusion, scoring.lexical;"
            "from scoring.lexical import Analyzer; Analyzer('en')('the running tests');"
            "print(sorted(m for m in ('torch', 'numba', 'bm25s') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
