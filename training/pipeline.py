"""One training run: sources -> split -> negatives -> fine-tune -> evaluate -> export -> gates -> publish.

Nothing touches the registry until every gate passed: the model is exported into a staging
directory and published (atomic rename) only then; any failure removes the staging directory.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporters.build import ExportError, build_version
from exporters.checks import Pair
from exporters.source import ModelSource, load, resolve
from state.ids import model_id
from state.registry import Registry
from state.settings import Settings
from training import gates as G
from training.bm25 import BM25Index
from training.config import TrainConfig
from training.evaluate import evaluate_systems, torch_scorer
from training.examples import Example, SourceError
from training.negatives import add_negatives
from training.splits import split, subset

class GateFailed(Exception):
    def __init__(self, gates: list[dict[str, Any]]):
        self.gates = gates
        super().__init__(G.describe_failure(gates))


@dataclass
class DataSpec:
    beir: str | None = None
    beir_split: str = "train"
    eval_split: str | None = None  # a BEIR split to evaluate on; else a seeded split of the training data
    ragas: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    search_logs: bool = False  # read impressions/clicks of the domain from the event store

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataSpec":
        return cls(**d)


class Reporter:
    """Where a run reports; the job entry point writes these to the job record."""

    def stage(self, name: str) -> None: ...
    def progress(self, done: int, total: int) -> None: ...
    def update(self, **fields: Any) -> None: ...


def load_sources(spec: DataSpec, domain: str, db_url: str) -> tuple[list[Example], dict, dict]:
    """All examples, per-source stats, and the corpus (doc id -> text) negatives are mined from."""
    from training.sources.beir import beir_examples, load_beir
    from training.sources.labels import load_labels
    from training.sources.ragas import load_ragas

    examples: list[Example] = []
    stats: dict[str, Any] = {}
    corpus: dict[str, str] = {}
    if spec.beir:
        data = load_beir(spec.beir, spec.beir_split)
        ex = beir_examples(data)
        examples += ex
        corpus.update(data.corpus)
        stats["beir"] = {"dir": spec.beir, "split": spec.beir_split, "queries": len(data.queries), "pairs": len(ex)}
    for p in spec.ragas:
        ex, st = load_ragas(p)
        examples += ex
        stats[f"ragas:{Path(p).name}"] = st
    for p in spec.labels:
        ex, st = load_labels(p)
        examples += ex
        stats[f"labels:{Path(p).name}"] = st
    if spec.search_logs:
        from state.store import Store
        from training.sources.search_logs import examples_from_store

        store = Store(db_url)
        try:
            ex, st = examples_from_store(store, domain)
        finally:
            store.close()
        examples += ex
        stats["search_logs"] = st
    if not examples:
        raise SourceError("no training data: give a BEIR directory, RAGAS/label files, or enable search logs")
    # passages of every source join the mining corpus, keyed by a stable id
    for e in examples:
        if e.doc_id is None:
            e.doc_id = "p" + hashlib.sha256(e.passage.encode()).hexdigest()[:16]  # stable across runs
        corpus.setdefault(e.doc_id, e.passage)
    return examples, stats, corpus


def _heldout(examples: list[Example], spec: DataSpec, cfg: TrainConfig, corpus: dict[str, str],
             index: BM25Index) -> tuple[list[Example], dict, dict, dict]:
    """(train examples, eval queries, eval qrels, eval candidates)."""
    if spec.beir and spec.eval_split:
        from training.sources.beir import load_beir

        ev = load_beir(spec.beir, spec.eval_split)
        queries, qrels = ev.queries, ev.qrels
        train = examples
    else:
        qids = sorted({e.query_id for e in examples})
        train_q, dev_q = split(qids, cfg.dev_fraction, cfg.seed)
        dev = set(dev_q)
        train = [e for e in examples if e.query_id not in dev]
        queries = {e.query_id: e.query for e in examples if e.query_id in dev}
        qrels = {}
        graded = any(e.label > 1 for e in examples)  # expert labels 1-5: 1 means "not relevant"
        for e in examples:
            if e.query_id in dev:
                qrels.setdefault(e.query_id, {})[e.doc_id] = int(e.label - 1 if graded else e.label > 0)
        qrels = {q: d for q, d in qrels.items() if any(v > 0 for v in d.values())}
        queries = {q: queries[q] for q in qrels}
    cands = index.search(queries, cfg.eval_k)
    if not (spec.beir and spec.eval_split):  # judged passages of a dev query are always among its candidates
        for q, docs in qrels.items():
            for d in docs:
                cands[q].setdefault(d, 0.0)
    return train, queries, qrels, cands


@dataclass
class Prepared:
    """What training and evaluation work on: training examples (with negatives) and the held-out set."""
    train: list[Example]
    queries: dict[str, str]  # held-out query id -> text
    qrels: dict[str, dict[str, int]]
    candidates: dict[str, dict[str, float]]  # held-out query id -> first-stage top-k {doc id: score}
    corpus: dict[str, str]
    stats: dict[str, Any]
    source: ModelSource  # the base model


def base_ms_per_pair(settings: Settings, cfg: TrainConfig) -> float | None:
    """The served base model's ms/pair, measured now, under the same machine load as the candidate."""
    if cfg.max_ms_ratio_to_base is None:
        return None
    from exporters.base_model import ensure_base
    from exporters.checks import ms_per_pair
    from scoring.scorer import VersionScorer

    return ms_per_pair(VersionScorer(ensure_base(settings), threads=1, max_length=cfg.max_length))


def prepare(domain: str, spec: DataSpec, cfg: TrainConfig, settings: Settings, rep: Reporter) -> Prepared:
    rep.stage("load")
    examples, stats, corpus = load_sources(spec, domain, settings.database_url)
    if cfg.max_queries:
        keep = set(subset(sorted({e.query_id for e in examples}), cfg.max_queries, cfg.seed))
        examples = [e for e in examples if e.query_id in keep]
    index = BM25Index(corpus)
    train, queries, qrels, cands = _heldout(examples, spec, cfg, corpus, index)
    rep.update(sources=stats)
    rep.stage("negatives")
    src = resolve(cfg.base_model)
    miner = load(src, cfg.max_length) if cfg.negative_source != "bm25" and src.kind == "bi-encoder" else None
    train, stats["negatives"] = add_negatives(
        train, corpus, per_query=cfg.negatives_per_query, source=cfg.negative_source, rank_range=cfg.negative_range,
        random_count=cfg.random_negatives, base_model=miner, seed=cfg.seed, index=index)
    rep.update(sources=stats)
    return Prepared(train, queries, qrels, cands, corpus, stats, src)


def fine_tune(data: Prepared, cfg: TrainConfig, rep: Reporter) -> tuple[Any, str, float]:
    """(trained model, its kind, seconds)."""
    rep.stage("train")
    src = data.source
    kind = src.kind if cfg.model_kind == "auto" else cfg.model_kind
    t0 = time.time()
    if kind == "bi-encoder":
        from training.finetune import train_bi_encoder

        model = train_bi_encoder(src.path, data.train, cfg, progress=rep.progress)
    else:
        from training.finetune import load_cross_encoder, train_cross_encoder

        model = load_cross_encoder(src.kind, src.path, cfg.max_length)
        model = train_cross_encoder(model, data.train, cfg, new_head=src.kind != "cross-encoder",
                                    progress=rep.progress)
    return model, kind, time.time() - t0


def evaluate(data: Prepared, model: Any, kind: str, cfg: TrainConfig, spec: DataSpec, settings: Settings,
             rep: Reporter) -> dict:
    """bm25, base and candidate on the same held-out candidates."""
    rep.stage("evaluate")
    base = load(data.source, cfg.max_length)
    windows = {"max_length": cfg.max_length, "doc_tokens": settings.doc_tokens}  # as served
    systems = {"bm25": None, "base": torch_scorer(base, data.source.kind, **windows),
               "candidate": torch_scorer(model, kind, **windows)}
    metrics = evaluate_systems(systems, data.queries, data.qrels, data.candidates, data.corpus, cfg.eval_k,
                               progress=lambda name, d, t: rep.progress(d, t))
    metrics["eval"] = {"queries": len(data.queries), "k": cfg.eval_k,
                       "split": spec.eval_split or f"dev {cfg.dev_fraction:.0%} of training queries (seed {cfg.seed})"}
    metrics["train_pairs"] = len(data.train)
    return metrics


def export_gate_publish(domain: str, model: Any, data: Prepared, metrics: dict, quality: dict, cfg: TrainConfig,
                        settings: Settings, rep: Reporter, activate: bool) -> tuple[str, list]:
    """Export into a staging dir, run the export gates, publish only if every gate passed."""
    rep.stage("export")
    registry = Registry(settings.registry_root)
    staged = registry.stage(domain)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model.save(tmp)
            pairs = [Pair(data.queries[q], data.corpus[d], float(data.qrels[q].get(d, 0)), q)
                     for q in list(data.queries)[:60] for d in list(data.candidates[q])[:10]]
            trained_from = {"base_model": cfg.base_model, "sources": data.stats, "config": cfg.to_dict()}
            try:
                manifest = build_version(tmp, staged, max_length=cfg.max_length, pairs=pairs,
                                         openvino=settings.builds_openvino,
                                         progress=lambda s, d, t: rep.progress(d, t),
                                         extra={"trained_from": trained_from, "evaluation": metrics})
                gates = [quality] + G.export_gates(manifest, cfg, base_ms_per_pair(settings, cfg))
            except ExportError as e:
                gates = [quality, G.parity_failed(str(e))]
        rep.stage("gates")
        rep.update(gates=gates)
        if G.failed(gates):
            raise GateFailed(gates)
        manifest["gates"] = gates
        manifest["source_model"] = cfg.base_model
        rep.stage("publish")
        return registry.publish(domain, staged, manifest, activate=activate), gates
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def run(domain: str, spec: DataSpec, cfg: TrainConfig, settings: Settings, *,
        activate: bool = False, reporter: Reporter | None = None) -> dict[str, Any]:
    rep = reporter or Reporter()
    t_start = time.time()
    data = prepare(domain, spec, cfg, settings, rep)
    model, kind, train_s = fine_tune(data, cfg, rep)
    metrics = evaluate(data, model, kind, cfg, spec, settings, rep) | {"train_seconds": round(train_s, 1)}
    rep.update(metrics=metrics)
    quality = G.quality_gate(metrics["base"]["ndcg@10"], metrics["candidate"]["ndcg@10"], cfg.min_gain)
    rep.update(gates=[quality])
    if not quality["passed"]:  # do not spend minutes exporting a model that cannot be published
        raise GateFailed([quality])
    version, gates = export_gate_publish(domain, model, data, metrics, quality, cfg, settings, rep, activate)
    return {"version": version, "model_id": model_id(domain, version), "metrics": metrics, "gates": gates,
            "sources": data.stats, "seconds": round(time.time() - t_start, 1)}
