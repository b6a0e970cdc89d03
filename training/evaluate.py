"""Rerank the same first-stage candidates with each system, scored as served, and score it with ranx."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable

import numpy as np

from training.metrics import score_run

if TYPE_CHECKING:
    from scoring.files import Engine
    from scoring.fusion import LexicalPart
    from state.settings import Settings

Scorer = Callable[[str, list[str]], np.ndarray]  # (query, passages) -> scores


def _autocast(bf16: bool):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def torch_scorer(model: object, kind: str, max_length: int = 256, doc_tokens: int = 4096,
                 batch_size: int = 32, bf16: bool = False) -> Scorer:
    """A sentence-transformers model, scored over the same windows serving scores (scoring/windows.py):
    a long passage's score is its best window's, so evaluation and the gate measure what is served.
    bf16: autocast (on a CPU with native bf16, ~2x faster; cosines agree to ~1e-4)."""
    from exporters.source import prompts_of
    from scoring.windows import Windower, aggregate

    windows = Windower(model.tokenizer.backend_tokenizer, kind, max_length)  # type: ignore[attr-defined]
    if kind == "cross-encoder":
        def score(query: str, docs: list[str]) -> np.ndarray:
            texts, owner, _ = windows.texts(query, docs, doc_tokens)
            with _autocast(bf16):
                per = np.asarray(model.predict([(query, t) for t in texts], batch_size=batch_size,  # type: ignore[attr-defined]
                                               show_progress_bar=False), dtype=np.float32).reshape(len(texts), -1)[:, 0]
            return aggregate(per, owner, len(docs))
        return score
    cache: dict[str, np.ndarray] = {}

    def encode(texts: list[str]) -> np.ndarray:
        with _autocast(bf16):
            out = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,  # type: ignore[attr-defined]
                               show_progress_bar=False, convert_to_tensor=True)
        return out.float().numpy()

    prompts = prompts_of(model)

    def score_bi(query: str, docs: list[str]) -> np.ndarray:
        query, docs = prompts.apply(query, docs)  # as the served scorer does (scoring/windows.Prompts)
        texts, owner, _ = windows.texts(query, docs, doc_tokens)
        new = [t for t in dict.fromkeys(texts) if t not in cache]  # each window is embedded once per run
        if new:
            for t, e in zip(new, encode(new)):
                cache[t] = e
        q = encode([query])[0]
        return aggregate((np.stack([cache[t] for t in texts]) @ q).astype(np.float32), owner, len(docs))
    return score_bi


def _capped(tokenizer: object, doc_tokens: int) -> Callable[[list[str]], list[str]]:
    """Documents as serving's lexical part reads them: each cut at the token cap (scoring/windows.py)."""
    from scoring.windows import Windower

    windows = Windower(tokenizer, "bi-encoder", 256)  # the window length plays no part in the cap
    return lambda docs: windows.cap_documents(docs, doc_tokens)[0]


def served_scorer(neural: Scorer, lexical: LexicalPart, tokenizer: object, doc_tokens: int = 4096) -> Scorer:
    """The neural scorer plus what serving adds to it (scoring/scorer.py): BM25 over each document up
    to the token cap (domain statistics, or the request's own), fused by the same z-sum."""
    from scoring.fusion import fuse

    cap = _capped(tokenizer, doc_tokens)

    def score(query: str, docs: list[str]) -> np.ndarray:
        s = np.asarray(neural(query, docs), dtype=np.float32)
        part = lexical(query, cap(docs)) if lexical.active else None
        return s if part is None else fuse(s, part[0], part[1])
    return score


def lexical_scorer(lexical: Scorer, tokenizer: object, doc_tokens: int = 4096) -> Scorer:
    """A lexical scorer alone, over the documents as serving reads them (up to the token cap)."""
    cap = _capped(tokenizer, doc_tokens)
    return lambda query, docs: lexical(query, cap(docs))


def version_scorer(version_dir: str, threads: int = 1, engine: Engine = "onnxruntime", max_length: int = 256,
                   doc_tokens: int = 4096, lexical_only: bool = False, **options: object) -> Scorer:
    """A published version, scored as served (torch-free, windows included); options: VersionScorer's
    (hybrid, local_lexical, cache). lexical_only: a hybrid version's lexical scorer alone."""
    from scoring.scorer import VersionScorer

    scorer = VersionScorer(version_dir, threads=threads, engine=engine, max_length=max_length,
                           doc_tokens=doc_tokens, **options)  # type: ignore[arg-type]
    if lexical_only:
        domain = scorer.lexical.domain
        if domain is None:
            raise ValueError(f"{version_dir} has no lexical scorer")
        return lambda q, docs: domain(q, scorer.windows.cap_documents(docs, doc_tokens)[0])
    return lambda q, docs: scorer.score(q, docs).scores


def served_options(settings: Settings, threads: int, max_length: int | None = None) -> dict:
    """VersionScorer options as the pool scores (engine, window length, token cap), with one embedding
    cache: every scorer built with them shares it, so the parts of a model cost one pass over the passages."""
    from scoring.cache import EmbeddingCache

    return {"threads": threads, "engine": settings.engine, "max_length": max_length or settings.max_length,
            "doc_tokens": settings.doc_tokens, "cache": EmbeddingCache(2 << 30)}


def served_base(settings: Settings, served: dict, multilingual: str | None = None) -> dict[str, Scorer]:
    """The served base version (built on first use), torch-free: "base_neural" (its cosine alone) and
    "base" (as the pool serves it: fused with request-local BM25), with `served_options`. With
    `multilingual` (a model name: the multilingual base of base routing, or the backbone an e5 domain model
    was fine-tuned from), the same two for it too, built on first use: "multilingual_base_neural" and
    "multilingual_base" (fused at the multilingual base's weights, as the pool fuses it)."""
    from exporters.base_model import ensure_base
    from scoring.fusion import LocalLexical

    base_dir = str(ensure_base(settings))
    systems = {"base_neural": version_scorer(base_dir, **served),
               "base": version_scorer(base_dir, **served, local_lexical=LocalLexical(**settings.base_lexical()))}
    if multilingual:
        m_dir = str(ensure_base(settings, multilingual))
        systems |= {"multilingual_base_neural": version_scorer(m_dir, **served),
                    "multilingual_base": version_scorer(m_dir, **served, local_lexical=LocalLexical(
                        **settings.multilingual_base_lexical()))}
    return systems


def rerank(scorer: Scorer, queries: dict[str, str], candidates: dict[str, dict[str, float]],
           corpus: dict[str, str], progress: Callable[[int, int], None] | None = None) -> dict[str, dict[str, float]]:
    run = {}
    for i, (qid, cands) in enumerate(candidates.items()):
        ids = list(cands)
        scores = scorer(queries[qid], [corpus[d] for d in ids]) if ids else []
        run[qid] = {d: float(s) for d, s in zip(ids, scores)}
        if progress:
            progress(i + 1, len(candidates))
    return run


def evaluate_systems(systems: dict[str, Scorer | None], queries: dict[str, str],
                     qrels: dict[str, dict[str, int]], candidates: dict[str, dict[str, float]],
                     corpus: dict[str, str], k: int,
                     progress: Callable[[str, int, int], None] | None = None) -> dict[str, dict[str, float]]:
    """None as a scorer means 'the first stage as is' (bm25)."""
    out = {}
    for name, scorer in systems.items():
        run = candidates if scorer is None else rerank(
            scorer, queries, candidates, corpus, (lambda d, t, n=name: progress(n, d, t)) if progress else None)
        out[name] = score_run(qrels, run, k)
    return out
