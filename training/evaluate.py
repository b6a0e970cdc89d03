"""Rerank the same BM25 top-k with each system and score it with ranx."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from training.metrics import score_run

if TYPE_CHECKING:
    from scoring.files import Engine

Scorer = Callable[[str, list[str]], np.ndarray]  # (query, passages) -> scores


def torch_scorer(model: object, kind: str, max_length: int = 256, doc_tokens: int = 4096,
                 batch_size: int = 32) -> Scorer:
    """A sentence-transformers model, scored over the same windows serving scores (scoring/windows.py):
    a long passage's score is its best window's, so evaluation and the gate measure what is served."""
    from scoring.windows import Windower, aggregate

    windows = Windower(model.tokenizer.backend_tokenizer, kind, max_length)  # type: ignore[attr-defined]
    if kind == "cross-encoder":
        def score(query: str, docs: list[str]) -> np.ndarray:
            texts, owner, _ = windows.texts(query, docs, doc_tokens)
            per = np.asarray(model.predict([(query, t) for t in texts], batch_size=batch_size,  # type: ignore[attr-defined]
                                           show_progress_bar=False), dtype=np.float32).reshape(len(texts), -1)[:, 0]
            return aggregate(per, owner, len(docs))
        return score
    cache: dict[str, np.ndarray] = {}

    def score_bi(query: str, docs: list[str]) -> np.ndarray:
        texts, owner, _ = windows.texts(query, docs, doc_tokens)
        new = [t for t in dict.fromkeys(texts) if t not in cache]  # each window is embedded once per run
        if new:
            for t, e in zip(new, model.encode(new, batch_size=batch_size, normalize_embeddings=True,  # type: ignore[attr-defined]
                                              show_progress_bar=False)):
                cache[t] = e
        q = model.encode([query], normalize_embeddings=True, show_progress_bar=False)[0]  # type: ignore[attr-defined]
        return aggregate((np.stack([cache[t] for t in texts]) @ q).astype(np.float32), owner, len(docs))
    return score_bi


def version_scorer(version_dir: str, threads: int = 1, engine: Engine = "onnxruntime", max_length: int = 256,
                   doc_tokens: int = 4096) -> Scorer:
    """A published version, scored as served (torch-free, windows included)."""
    from scoring.scorer import VersionScorer

    scorer = VersionScorer(version_dir, threads=threads, engine=engine, max_length=max_length,
                           doc_tokens=doc_tokens)
    return lambda q, docs: scorer.score(q, docs).scores


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
