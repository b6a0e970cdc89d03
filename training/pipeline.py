"""One training run: sources -> split -> negatives -> fine-tune -> evaluate -> export -> gates -> publish.

Nothing touches the registry until every gate passed: the model is exported into a staging
directory and published (atomic rename) only then; any failure removes the staging directory.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporters.build import ExportError, build_version
from exporters.checks import Pair
from exporters.source import ModelSource, load, resolve
from scoring.fusion import Fusion, LexicalPart, LocalLexical
from scoring.lexical import Analyzer, LexicalScorer, LexicalStats
from state.ids import model_id
from state.registry import Registry
from state.settings import Settings
from training import gates as G
from training.bm25 import BM25Index, domain_language
from training.config import TrainConfig
from training.evaluate import (Scorer, evaluate_systems, lexical_scorer, rerank, served_base, served_options,
                               served_scorer, torch_scorer)
from training.examples import GRADED_SOURCES, Example, SourceError
from training.fusion_fit import fit_lexical_weight
from training.metrics import score_run
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
    expert_labels: bool = False  # the domain's grades stored by the label queue (state/labels.py)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataSpec":
        return cls(**d)


class Reporter:
    """Where a run reports; the job entry point writes these to the job record."""

    def stage(self, name: str) -> None: ...
    def progress(self, done: int, total: int) -> None: ...
    def update(self, **fields: Any) -> None: ...
    def loss(self, step: int, value: float) -> None: ...  # the trainer's logged training loss


def load_sources(spec: DataSpec, domain: str, db_url: str,
                 cfg: TrainConfig | None = None) -> tuple[list[Example], dict, dict]:
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
    if spec.search_logs or spec.expert_labels:  # the sources read from the service's database
        from state.store import Store
        from training.sources import search_logs, stored_labels

        store = Store(db_url)
        try:
            if spec.search_logs:
                ex, stats["search_logs"] = search_logs.examples_from_store(
                    store, domain, search_logs.ClickRules.from_config(cfg or TrainConfig()))
                examples += ex
            if spec.expert_labels:
                ex, stats["expert_labels"] = stored_labels.examples_from_store(store, domain)
                examples += ex
        finally:
            store.close()
    if not examples:
        raise SourceError("no training data: give a BEIR directory, RAGAS/label files, or enable search logs "
                          "or expert labels (the enabled ones had no usable rows)")
    # passages of every source join the mining corpus, keyed by a stable id
    for e in examples:
        if e.doc_id is None:
            e.doc_id = "p" + hashlib.sha256(e.passage.encode()).hexdigest()[:16]  # stable across runs
        corpus.setdefault(e.doc_id, e.passage)
    return examples, stats, corpus


@dataclass
class Heldout:
    """Queries every system is scored on, each over the same candidates: the first stage's own top-k
    for a query from a source with a corpus (BEIR), nothing injected; the judged set for a query from a
    corpus-less source (search logs, RAGAS, labels), scored by BM25 with the set's own statistics."""
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    candidates: dict[str, dict[str, float]]  # query id -> {doc id: first-stage (or judged-set BM25) score}
    judged: int = 0  # queries whose candidates are their judged set

    def subset(self, n: int, k: int, seed: int) -> "Heldout":
        keep = subset(sorted(self.queries), n, seed)
        return Heldout({q: self.queries[q] for q in keep}, {q: self.qrels[q] for q in keep},
                       {q: dict(list(self.candidates[q].items())[:k]) for q in keep})


def _grade(e: Example) -> int:
    """An example's relevance for ranx: expert grades 1-5 -> 0-4; BEIR grades as they are; other
    positive labels (0/1, click rates) -> at least 1."""
    if e.source in GRADED_SOURCES:
        return int(e.label - 1)
    return max(1, round(e.label)) if e.label > 0 else 0


def _labelled(examples: list[Example], qids: set[str]) -> tuple[dict, dict]:
    """(queries, qrels) of the given query ids; expert grades 1-5 become 0-4 (1 means not relevant),
    per example: graded sources beside binary ones."""
    queries, qrels = {}, {}
    for e in examples:
        if e.query_id in qids:
            queries[e.query_id] = e.query
            qrels.setdefault(e.query_id, {})[e.doc_id] = _grade(e)
    qrels = {q: d for q, d in qrels.items() if any(v > 0 for v in d.values())}
    return {q: queries[q] for q in qrels}, qrels


def _heldout_set(queries: dict, qrels: dict, from_corpus: set[str], index: BM25Index, corpus: dict[str, str],
                 k: int) -> Heldout:
    cands = index.search({q: t for q, t in queries.items() if q in from_corpus}, k)
    judged = [q for q in queries if q not in from_corpus]
    local = LexicalScorer(index.analyzer)  # statistics of the judged set itself
    for q in judged:
        ids = list(qrels[q])
        cands[q] = dict(zip(ids, (float(x) for x in local(queries[q], [corpus[d] for d in ids]))))
    return Heldout(queries, qrels, cands, len(judged))


def _query_groups(spec: DataSpec) -> dict[str, str]:
    """The BEIR directory's query groups (training/sources/beir.py), if it names any."""
    from training.sources.beir import query_groups

    return query_groups(spec.beir) if spec.beir else {}


def _heldout(examples: list[Example], spec: DataSpec, cfg: TrainConfig, corpus: dict[str, str],
             index: BM25Index, groups: dict[str, str] | None = None) -> tuple[list[Example], Heldout, Heldout | None]:
    """(training examples, dev queries (the gate's), fusion queries (fit the fusion weight; never
    seen by the neural model) or None). Dev and fusion queries are seeded query-level splits of the
    training queries (dev: `eval_split` of the BEIR directory instead, when given), by whole query groups
    when the BEIR directory names them."""
    from_corpus = {e.query_id for e in examples if spec.beir and e.source == "beir"}
    qids = sorted({e.query_id for e in examples})
    groups = _query_groups(spec) if groups is None else groups
    if spec.beir and spec.eval_split:
        from training.sources.beir import load_beir

        ev = load_beir(spec.beir, spec.eval_split)
        dev = _heldout_set(ev.queries, ev.qrels, set(ev.queries), index, corpus, cfg.eval_k)
        train_q = qids
    else:
        train_q, dev_q = split(qids, cfg.dev_fraction, cfg.seed, groups)
        dev_q = subset(dev_q, cfg.max_dev_queries, cfg.seed)  # the rest of the dev side is not trained on
        dev = _heldout_set(*_labelled(examples, set(dev_q)), from_corpus, index, corpus, cfg.eval_k)
    fusion = None
    if cfg.fusion:
        train_q, fuse_q = split(train_q, cfg.fusion_fraction, cfg.seed + 1, groups)
        fuse_q = subset(fuse_q, cfg.max_fusion_queries, cfg.seed + 1)
        fusion = _heldout_set(*_labelled(examples, set(fuse_q)), from_corpus, index, corpus, cfg.eval_k)
    keep = set(train_q)
    return [e for e in examples if e.query_id in keep], dev, fusion


@dataclass
class Prepared:
    """What training and evaluation work on: training examples (with negatives), the held-out sets and
    the domain's lexical statistics (from the same analysis as the first stage)."""
    train: list[Example]
    dev: Heldout
    fusion: Heldout | None
    corpus: dict[str, str]
    stats: dict[str, Any]
    source: ModelSource  # the base model
    lexical: LexicalStats


def latency_reference(backbone: str, cfg: TrainConfig, settings: Settings) -> str:
    """The base whose ms/pair the latency gate scales: the served base, except for a model fine-tuned from
    the multilingual backbone, whose reference is that backbone's own base export (which the quality gate
    then also compares with, beside the served base: base_scorers). An e5 domain model
    stands in for e5 (base routing sends the languages MiniLM does not read there), and against MiniLM
    every 12-layer model would fail on its depth alone, which choosing the backbone by language already
    decided; against its own base the gate still refuses what the export made slower (a wider rung of
    the ladder, a slower engine). README, "Training gates"."""
    multilingual = {cfg.multilingual_base_model, settings.multilingual_base} - {""}
    return backbone if backbone in multilingual and backbone != settings.base_model else settings.base_model


def base_ms_per_pair(settings: Settings, cfg: TrainConfig, reference: str) -> float | None:
    """The reference base's ms/pair (`latency_reference`), measured now, right before the candidate's
    export ladder measures its rungs, under the same machine load; built into the home on first use."""
    if cfg.max_ms_ratio_to_base is None:
        return None
    from exporters.base_model import ensure_base
    from exporters.checks import ms_per_pair
    from scoring.scorer import VersionScorer

    return ms_per_pair(VersionScorer(ensure_base(settings, reference), threads=1, max_length=cfg.max_length))


def prepare(domain: str, spec: DataSpec, cfg: TrainConfig, settings: Settings, rep: Reporter) -> Prepared:
    rep.stage("load")
    examples, stats, corpus = load_sources(spec, domain, settings.database_url, cfg)
    if cfg.max_queries:
        keep = set(subset(sorted({e.query_id for e in examples}), cfg.max_queries, cfg.seed))
        examples = [e for e in examples if e.query_id in keep]
    language = cfg.language or domain_language(corpus, list({e.query_id: e.query for e in examples}.values()))
    index = BM25Index(corpus, Analyzer(language))
    stats["lexical"] = {"language": language, "detected": cfg.language is None, "passages": index.stats.n_docs,
                        "terms": len(index.stats.df)}
    groups = _query_groups(spec)
    train, dev, fusion = _heldout(examples, spec, cfg, corpus, index, groups)
    stats["split"] = {"train_queries": len({e.query_id for e in train}), "dev_queries": len(dev.queries),
                      "query_groups": len(set(groups.values())),
                      "dev_judged_set_queries": dev.judged,
                      "fusion_queries": len(fusion.queries) if fusion else 0}
    rep.update(sources=stats)
    rep.stage("negatives")
    backbone, stats["backbone"] = choose_backbone(cfg, language, settings)
    src = resolve(backbone, settings.registry_root)
    miner = load(src, cfg.max_length) if cfg.negative_source != "bm25" and src.kind == "bi-encoder" else None
    train, stats["negatives"] = add_negatives(
        train, corpus, per_query=cfg.negatives_per_query, source=cfg.negative_source, rank_range=cfg.negative_range,
        random_count=cfg.random_negatives, base_model=miner, seed=cfg.seed, index=index)
    rep.update(sources=stats)
    return Prepared(train, dev, fusion, corpus, stats, src, index.stats)


def choose_backbone(cfg: TrainConfig, language: str, settings: Settings) -> tuple[str, dict[str, Any]]:
    """The model a domain is fine-tuned from: `base_model` of its training options; else the served base
    for a language that base reads (settings.base_languages), the multilingual backbone for any other."""
    reads = settings.base_lexical()["languages"]
    if cfg.base_model:
        name, why = cfg.base_model, "training option base_model"
    elif reads is None or language in reads:
        name, why = settings.base_model, f"the served base reads {language!r}"
    else:
        name, why = cfg.multilingual_base_model, f"the served base does not read {language!r}"
    return name, {"model": name, "language": language, "why": why}


def _windows(cfg: TrainConfig, settings: Settings) -> dict[str, Any]:
    """How evaluation scores: the served windows, bf16 autocast where the CPU has it."""
    return {"max_length": cfg.max_length, "doc_tokens": settings.doc_tokens, "bf16": cfg.use_bf16()}


def _dev_score(data: Prepared, kind: str, cfg: TrainConfig, settings: Settings):
    """Early stopping: the neural model's NDCG@10 on a subset of the dev queries (their first-stage
    top early_stopping_k), at the served length."""
    if cfg.early_stopping_queries <= 0 or cfg.epochs <= 1 or not data.dev.queries:
        return None
    es = data.dev.subset(cfg.early_stopping_queries, cfg.early_stopping_k, cfg.seed)

    def score(model: Any) -> float:
        saved = getattr(model, "max_seq_length", None)
        if kind == "bi-encoder":
            model.max_seq_length = cfg.max_length
        try:
            run_ = rerank(torch_scorer(model, kind, **_windows(cfg, settings)), es.queries, es.candidates, data.corpus)
            return score_run(es.qrels, run_, cfg.early_stopping_k)["ndcg@10"]
        finally:
            if kind == "bi-encoder":
                model.max_seq_length = saved
    return score


def fine_tune(data: Prepared, cfg: TrainConfig, settings: Settings, rep: Reporter) -> tuple[Any, str, float, list]:
    """(trained model, its kind, seconds, per-epoch dev scores)."""
    rep.stage("train")
    src = data.source
    kind = src.kind if cfg.model_kind == "auto" else cfg.model_kind
    dev_score, history = _dev_score(data, kind, cfg, settings), []
    t0 = time.time()
    on_loss = getattr(rep, "loss", None)  # reporters are duck-typed (the CLI's bars, tests): loss is optional
    if kind == "bi-encoder":
        from training.finetune import train_bi_encoder

        model = train_bi_encoder(src.path, data.train, cfg, progress=rep.progress, dev_score=dev_score,
                                 history=history, on_loss=on_loss)
    else:
        from training.finetune import load_cross_encoder, train_cross_encoder

        model = load_cross_encoder(src.kind, src.path, cfg.max_length)
        model = train_cross_encoder(model, data.train, cfg, new_head=src.kind != "cross-encoder",
                                    progress=rep.progress, dev_score=dev_score, history=history, on_loss=on_loss)
    return model, kind, time.time() - t0, history


def fit_fusion(data: Prepared, neural: Scorer, tokenizer: Any, cfg: TrainConfig, settings: Settings) -> Fusion:
    """The lexical weight of the domain model: the grid value with the best NDCG@10 on the fusion
    queries (never trained on), from the neural and lexical scores as served."""
    f = data.fusion
    assert f is not None
    lexical = lexical_scorer(LexicalScorer(data.lexical.analyzer, data.lexical), tokenizer, settings.doc_tokens)
    w, table = fit_lexical_weight(rerank(neural, f.queries, f.candidates, data.corpus),
                                  rerank(lexical, f.queries, f.candidates, data.corpus), f.qrels)
    return Fusion.with_lexical_weight(w, {"queries": len(f.queries), "k": cfg.eval_k, "ndcg@10_by_weight": table})


def base_scorers(data: Prepared, cfg: TrainConfig, settings: Settings) -> tuple[dict[str, Scorer], str]:
    """The base systems the gate compares with ("base_neural", "base", and "multilingual_base*" for a
    model fine-tuned from the multilingual backbone: its own base), and what scored them: the served
    base version itself (int8, the pool's engine; ~2x faster than torch per pair) when it is built or the
    latency gate will build it anyway; else the torch base model with serving's windows and lexical part."""
    from scoring.files import MANIFEST

    served_dir = Registry(settings.registry_root).base_dir(settings.base_model, settings.max_length,
                                                           settings.builds_openvino)
    backbone = latency_reference(data.source.name, cfg, settings)
    own = backbone if backbone != settings.base_model else None  # an e5 model also meets e5's base
    if (served_dir / MANIFEST).is_file() or cfg.max_ms_ratio_to_base is not None or own:
        served = served_options(settings, cfg.threads or max(1, os.cpu_count() or 1), cfg.max_length)
        return served_base(settings, served, own), f"served base ({settings.engine})"
    served_src = resolve(settings.base_model, settings.registry_root)  # not the backbone: they may differ
    base = load(served_src, cfg.max_length)
    neural = torch_scorer(base, served_src.kind, **_windows(cfg, settings))
    local = LexicalPart(local=LocalLexical(**settings.base_lexical()))
    fused = served_scorer(neural, local, base.tokenizer.backend_tokenizer, settings.doc_tokens)
    return {"base_neural": neural, "base": fused}, "torch"


def evaluate(data: Prepared, model: Any, kind: str, cfg: TrainConfig, spec: DataSpec, settings: Settings,
             rep: Reporter) -> tuple[dict, Fusion | None]:
    """Every system on the dev queries' candidates, scored as served: bm25 (the first stage), base (the
    served base: its neural score fused with request-local BM25), base_neural, lexical (BM25 with the
    domain's statistics), candidate_neural and candidate (the domain model as it would be published)."""
    rep.stage("evaluate")
    windows = _windows(cfg, settings)
    tok = model.tokenizer.backend_tokenizer
    cand_neural = torch_scorer(model, kind, **windows)  # one embedding cache for fusion and dev queries
    fusion = fit_fusion(data, cand_neural, tok, cfg, settings) if cfg.fusion and data.fusion else None
    cap = {"doc_tokens": settings.doc_tokens}
    base, base_by = base_scorers(data, cfg, settings)
    systems = {
        "bm25": None,
        **base,
        "lexical": lexical_scorer(LexicalScorer(data.lexical.analyzer, data.lexical), tok, settings.doc_tokens),
        "candidate_neural": cand_neural,
        "candidate": served_scorer(cand_neural, LexicalPart(data.lexical, fusion) if fusion else LexicalPart(), tok, **cap),
    }
    dev = data.dev
    metrics = evaluate_systems(systems, dev.queries, dev.qrels, dev.candidates, data.corpus, cfg.eval_k,
                               progress=lambda name, d, t: rep.progress(d, t))
    metrics["eval"] = {"queries": len(dev.queries), "k": cfg.eval_k, "judged_set_queries": dev.judged,
                       "candidates": "first-stage top-k, nothing injected (judged set for corpus-less sources)",
                       "split": spec.eval_split or (f"dev {cfg.dev_fraction:.0%} of training queries (seed {cfg.seed})"
                                                    + (", whole query groups" if data.stats["split"]["query_groups"]
                                                       else "")),
                       "language": data.lexical.analyzer.language, "base_scored_by": base_by}
    if fusion is not None:
        metrics["fusion"] = {"lexical_weight": fusion.lexical_weight, **(fusion.fitted_on or {})}
    metrics["train_pairs"] = len(data.train)
    return metrics, fusion


def _vocabulary_texts(model: Any, data: Prepared, cfg: TrainConfig) -> list[str] | None:
    """What a bi-encoder with a large vocabulary keeps the pieces of (exporters/vocabulary.py): the domain's
    corpus and train queries; None: its table stays whole."""
    tokenizer = getattr(model, "tokenizer", None)
    if (cfg.prune_vocabulary_above is None or not hasattr(model, "encode") or tokenizer is None
            or len(tokenizer) <= cfg.prune_vocabulary_above):
        return None
    return [*data.corpus.values(), *sorted({e.query for e in data.train})]


def export_gate_publish(domain: str, model: Any, data: Prepared, metrics: dict, quality: dict, cfg: TrainConfig,
                        settings: Settings, rep: Reporter, activate: bool,
                        fusion: Fusion | None = None) -> tuple[str, list, dict]:
    """Export into a staging dir (with the lexical statistics and fusion weights of a hybrid model),
    run the export gates on the whole model, publish only if every gate passed. Returns (version, gates,
    which rung of the export ladder won and what each rung tried cost)."""
    rep.stage("export")
    registry = Registry(settings.registry_root)
    staged = registry.stage(domain)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model.save(tmp)
            dev = data.dev
            pairs = [Pair(dev.queries[q], data.corpus[d], float(dev.qrels[q].get(d, 0)), q)
                     for q in list(dev.queries)[:60] for d in list(dev.candidates[q])[:10]]
            trained_from = {"base_model": data.source.name, "sources": data.stats, "config": cfg.to_dict()}
            reference = latency_reference(data.source.name, cfg, settings)
            base_ms = base_ms_per_pair(settings, cfg, reference)
            try:
                manifest = build_version(tmp, staged, max_length=cfg.max_length, pairs=pairs,
                                         limits=G.export_limits(cfg, base_ms), openvino=settings.builds_openvino,
                                         lexical=data.lexical if fusion else None, fusion=fusion,
                                         vocabulary_texts=_vocabulary_texts(model, data, cfg),
                                         progress=lambda s, d, t: rep.progress(d, t),
                                         extra={"trained_from": trained_from, "evaluation": metrics,
                                                "backbone": data.stats["backbone"]})
                export = G.export_summary(manifest)
                rep.update(export=export)
                gates = [quality] + G.export_gates(manifest, cfg, base_ms, reference)
                if fusion is not None:
                    gates.append(G.lexical_overhead_gate(manifest, cfg))
            except ExportError as e:
                gates = [quality, G.parity_failed(str(e))]
        rep.stage("gates")
        rep.update(gates=gates)
        if G.failed(gates):
            raise GateFailed(gates)
        manifest["gates"] = gates
        manifest["source_model"] = data.source.name
        rep.stage("publish")
        return registry.publish(domain, staged, manifest, activate=activate), gates, export
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def run(domain: str, spec: DataSpec, cfg: TrainConfig, settings: Settings, *,
        activate: bool = False, reporter: Reporter | None = None) -> dict[str, Any]:
    rep = reporter or Reporter()
    t_start = time.time()
    stage_seconds: dict[str, float] = {}  # where a run's minutes go (the 20-minute budget, issue 9)

    def lap(name: str, since: float) -> float:
        stage_seconds[name] = round(time.time() - since, 1)
        return time.time()

    data = prepare(domain, spec, cfg, settings, rep)
    t = lap("prepare", t_start)
    model, kind, train_s, epochs = fine_tune(data, cfg, settings, rep)
    t = lap("fine_tune", t)
    metrics, fusion = evaluate(data, model, kind, cfg, spec, settings, rep)
    t = lap("evaluate", t)
    metrics |= {"train_seconds": round(train_s, 1), "epochs": epochs}
    rep.update(metrics=metrics)
    quality = G.quality_gate(metrics, cfg.min_gain)
    rep.update(gates=[quality])
    if not quality["passed"]:  # do not spend minutes exporting a model that cannot be published
        raise GateFailed([quality])
    version, gates, export = export_gate_publish(domain, model, data, metrics, quality, cfg, settings, rep, activate,
                                         fusion)
    lap("export_gates_publish", t)
    return {"version": version, "model_id": model_id(domain, version), "metrics": metrics, "gates": gates,
            "export": export, "sources": data.stats, "seconds": round(time.time() - t_start, 1), "stage_seconds": stage_seconds}
