"""The torch-free scoring leaf on the real base model: windows over long documents, the embedding cache."""
from __future__ import annotations

import numpy as np
import pytest

from scoring.cache import EmbeddingCache
from scoring.fusion import LocalLexical
from scoring.scorer import VersionScorer
from scoring.windows import aggregate

FILLER = "The committee discussed the budget for the next fiscal year and agreed on procedural matters. "
DEEP = FILLER * 20 + "Paris is the capital and largest city of France. " + FILLER * 5


def test_aggregate_max_and_mean_of_best_two():
    scores = np.array([0.1, 0.9, 0.5, 0.3], dtype=np.float32)
    owner = np.array([0, 0, 0, 1])
    assert aggregate(scores, owner, 2, "max").tolist() == pytest.approx([0.9, 0.3])
    assert aggregate(scores, owner, 2, "top2").tolist() == pytest.approx([0.7, 0.3])  # one window: itself
    with pytest.raises(ValueError):
        aggregate(scores, owner, 2, "mean")


def test_long_documents_are_windowed_capped_and_counted(base_version):
    rt = VersionScorer(base_version, max_length=32, window_overlap=4)
    docs = ["Paris is the capital of France. " + "word " * 200, "short"]
    plain = rt.score("capital of France", docs, truncate=True)
    assert (plain.truncated, plain.windows) == (1, 2)  # truncate: one window each, the long one cut
    windowed = rt.score("capital of France", docs)
    assert windowed.truncated == 0 and windowed.windows > 8  # ~210 tokens in windows of ~28
    capped = rt.score("capital of France", docs, max_tokens_per_doc=50)
    assert capped.truncated == 1 and 2 < capped.windows < windowed.windows
    # the same windows as text: what training's torch scorers feed their model
    texts, owner, cut = rt.windows.texts("capital of France", docs, 50)
    assert len(texts) == capped.windows and cut == 1 and texts[0].startswith("Paris is the capital")
    assert list(owner).count(1) == 1 and texts[-1] == "short"


def test_evidence_after_the_first_window_counts(base_version):
    rt = VersionScorer(base_version, engine="openvino")
    docs = ["Bananas are yellow and rich in potassium.", FILLER * 26, DEEP]
    windowed = rt.score("What is the capital of France?", docs)
    first_window = rt.score("What is the capital of France?", docs, truncate=True)
    assert int(np.argmax(windowed.scores)) == 2
    assert windowed.scores[2] > first_window.scores[2] + 0.05  # the answer is past the first window


def test_embedding_cache_answers_repeats_without_inference_and_stays_bounded(base_version):
    docs = ["Paris is the capital of France.", "Bananas are yellow.", DEEP]
    fresh = VersionScorer(base_version, engine="openvino").score("capital of France?", docs)
    cache = EmbeddingCache(max_bytes=1 << 20)
    rt = VersionScorer(base_version, engine="openvino", cache=cache)
    first = rt.score("capital of France?", docs)
    again = rt.score("what is the capital city of France?", docs[::-1])
    assert (first.cached, again.cached) == (0, 3)
    # static int8 is deterministic: a cached passage scores as a fresh one, up to its fp16 embedding
    np.testing.assert_allclose(first.scores, fresh.scores, rtol=0, atol=1e-4)
    assert again.windows == first.windows and cache.stats()["hits"] == 3
    # another cap or truncation is another entry, never a wrong hit
    assert rt.score("capital of France?", docs, max_tokens_per_doc=40).cached == 0
    assert rt.score("capital of France?", docs, truncate=True).cached == 0
    small = EmbeddingCache(max_bytes=3 * 384 * 2)  # room for three of the four fp16 window embeddings
    rt_small = VersionScorer(base_version, engine="openvino", cache=small)
    rt_small.score("q", docs)
    assert small.stats()["bytes"] <= small.max_bytes and small.stats()["entries"] < 3


def test_openvino_keeps_the_embedding_table_int8_and_scores_as_the_exported_ir(base_version):
    """The compiled model holds no fp32 copy of the word embeddings (47 MB per model before), and the
    rewrite changes no score."""
    import openvino as ov

    from scoring.engines import OpenVinoEngine, int8_embedding_lookup
    from scoring.files import OPENVINO_XML

    core = ov.Core()
    model = core.read_model(str(base_version / OPENVINO_XML))
    rows = next(op for op in model.get_ordered_ops() if op.get_type_name() == "Constant"
                and op.get_element_type() == ov.Type.i8 and len(op.get_output_shape(0)) == 2
                and op.get_output_shape(0)[0] > 10000).get_output_shape(0)  # the vocabulary's table
    engine = OpenVinoEngine(base_version / OPENVINO_XML, threads=1)

    def f32_tables(compiled):
        return [op for op in compiled.get_runtime_model().get_ordered_ops()
                if op.get_output_size() and op.get_output_element_type(0) == ov.Type.f32
                and op.get_output_partial_shape(0).is_static and op.get_output_shape(0) == rows]

    plain = core.compile_model(str(base_version / OPENVINO_XML), "CPU", {"INFERENCE_NUM_THREADS": 1})
    assert f32_tables(plain), "the exported IR no longer folds the table to fp32: the rewrite may be moot"
    assert f32_tables(engine.compiled) == []
    assert int8_embedding_lookup(core.read_model(str(base_version / OPENVINO_XML))) >= 1
    rng = np.random.default_rng(0)
    feed = {name: rng.integers(1000, 20000, (3, 40)).astype(np.int64) for name in engine.input_names}
    feed["attention_mask"] = np.ones((3, 40), dtype=np.int64)
    if "token_type_ids" in feed:
        feed["token_type_ids"][:] = 0
    np.testing.assert_allclose(engine(feed), plain.create_infer_request().infer(feed)[plain.outputs[0]],
                               rtol=0, atol=1e-6)


def test_idle_openvino_models_release_their_buffers_and_still_score(base_version):
    from scoring import engines

    docs = ["Paris is the capital of France.", "Bananas are yellow.", DEEP]
    scorers = [VersionScorer(base_version, engine="openvino") for _ in range(engines.KEEP_WARM + 2)]
    first = [s.score("capital of France?", docs).scores for s in scorers]
    with engines._warm_lock:
        warm = {key for key, ref in engines._warm.items() if ref() is not None}
    # only the most recently used keep their buffers
    assert warm == {id(s._infer) for s in scorers[-engines.KEEP_WARM:]}
    again = scorers[0].score("capital of France?", docs).scores  # a released model allocates again
    np.testing.assert_allclose(again, first[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(first[0], first[-1], rtol=0, atol=1e-6)


def test_versions_with_one_tokenizer_share_it_and_a_new_window_does_not_leak(base_version):
    a, b = VersionScorer(base_version), VersionScorer(base_version)
    assert a.windows._pairs is b.windows._pairs  # ~6.5 MB per copy, three per version
    a.max_length = 32
    assert a.windows._pairs is not b.windows._pairs and b.max_length == 256
    long_doc = "word " * 300
    assert a.score("q", [long_doc], truncate=True).truncated == 1
    assert len(b.windows.encode("q", [long_doc], 4096)[1].encodings) == 2  # b still windows at 256


def test_openvino_batch_widths_are_bucketed_without_changing_scores(base_version, monkeypatch):
    """Widths rounded up to a multiple of 32 bound OpenVINO's per-shape kernel caches; padding is masked."""
    from scoring import scorer as S

    docs = ["Paris is the capital of France.", "word " * 40, "Bananas are yellow. " * 9, DEEP]

    def run(multiple: int) -> tuple[np.ndarray, set[int]]:
        monkeypatch.setattr(S, "WIDTH_MULTIPLE", multiple)
        rt = VersionScorer(base_version, engine="openvino", batch_size=2)  # several widths per request
        infer, widths = rt._infer, set()

        def recording(feed):
            widths.add(feed["input_ids"].shape[1])
            return infer(feed)
        rt._infer = recording
        return rt.score("capital of France?", docs).scores, widths

    bucketed, widths = run(S.WIDTH_MULTIPLE)
    exact, exact_widths = run(1)
    assert any(w % 32 for w in exact_widths) and all(w % 32 == 0 for w in widths)
    np.testing.assert_allclose(bucketed, exact, rtol=0, atol=2e-3)
    assert np.argsort(bucketed).tolist() == np.argsort(exact).tolist()


def test_fused_scores_of_stored_passages_equal_fresh_ones_when_documents_are_cut(base_version):
    """The lexical part re-tokenizes only documents the neural part cut (a request of stored passages
    tokenizes nothing else); BM25 still reads a cut document up to the cap, never its tail."""
    local = LocalLexical(weight=0.5, weight_uncovered=0.5)
    docs = [FILLER * 3 + "Paris is the capital of France.", "Bananas are yellow.", DEEP,
            "The capital of France is Paris, on the Seine."]
    query = "capital of France Paris"
    fresh = VersionScorer(base_version, engine="openvino", local_lexical=local)
    cached = VersionScorer(base_version, engine="openvino", local_lexical=local, cache=EmbeddingCache(1 << 20))
    for cap in (None, 40):
        want = fresh.score(query, docs, max_tokens_per_doc=cap)
        cached.score(query, docs, max_tokens_per_doc=cap)
        got = cached.score(query, docs, max_tokens_per_doc=cap)
        assert got.fused and got.cached == len(docs) and got.cut.tolist() == want.cut.tolist()
        np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-3)
    # with the cap at 40 tokens the first and third documents are cut before "Paris": BM25 must not see it
    bm25, _ = fresh.lexical_part(query, docs, 40, cut=want.cut)
    assert want.cut.tolist() == [True, False, True, False]
    reference, _ = fresh.lexical_part(query, docs, 40)  # every document tokenized again
    np.testing.assert_allclose(bm25, reference, rtol=0, atol=1e-9)
    assert bm25[0] < bm25[3]
