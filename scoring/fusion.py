"""Fusion of a model's neural score with its lexical score (numpy, request time).

The z-normalised weighted sum: each score is z-normalised over the request's own documents, so the
weight does not depend on either scorer's calibration, and

    fused = w_neural * z(neural) + w_lexical * z(lexical)        relevance_score = sigmoid(fused)

0.5 is the request's average document; a score says how far above or below the other documents of
the same request a document stands, so it is comparable within one response only. A request with
fewer than two documents has nothing to normalise over: it gets the neural score alone.
Weights: a domain version ships them in `fusion.json` (fitted at training time on queries the neural
model never saw); the base uses request-local BM25 with the weights of `LocalLexical` (settings).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from scoring.lexical import LexicalScorer, LexicalStats, detect_language

FEATURES = ("neural", "lexical")


def znorm(x: np.ndarray) -> np.ndarray:
    """z-score over the request's documents (a constant vector gives zeros)."""
    x = np.asarray(x, dtype=np.float64)
    sd = x.std() if x.size else 0.0
    return (x - x.mean()) / sd if sd > 1e-12 else np.zeros_like(x)


def fused_raw(neural: np.ndarray, lexical: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    return weights[0] * znorm(neural) + weights[1] * znorm(lexical)


def fuse(neural: np.ndarray, lexical: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Relevance in 0..1: sigmoid of the weighted z-sum."""
    return (1.0 / (1.0 + np.exp(-fused_raw(neural, lexical, weights)))).astype(np.float32)


@dataclass
class Fusion:
    """fusion.json of a version: {"format": 1, "type": "zsum", "features": [...], "weights": [...]}."""
    weights: tuple[float, float]
    fitted_on: dict | None = None  # how the weight was chosen (queries, NDCG@10 per weight)

    @property
    def lexical_weight(self) -> float:
        return self.weights[1]

    @classmethod
    def with_lexical_weight(cls, w: float, fitted_on: dict | None = None) -> "Fusion":
        return cls((round(1.0 - w, 4), round(w, 4)), fitted_on)

    def save(self, path: str | Path) -> None:
        data = {"format": 1, "type": "zsum", "features": list(FEATURES), "weights": list(self.weights)}
        if self.fitted_on:
            data["fitted_on"] = self.fitted_on
        Path(path).write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "Fusion":
        d = json.loads(Path(path).read_text())
        if d.get("format") != 1 or d.get("type") != "zsum" or tuple(d.get("features", ())) != FEATURES:
            raise ValueError(f"{path}: unsupported fusion {d.get('type')!r} over {d.get('features')!r}")
        w = [float(x) for x in d["weights"]]
        return cls((w[0], w[1]), d.get("fitted_on"))


SAMPLE_CHARS = 300  # per document, for the request's language


@dataclass(frozen=True)
class LocalLexical:
    """How a model without domain statistics (the base) fuses BM25 over the request's own documents:
    `weight` for a language the model covers, `weight_uncovered` for any other (an English-only
    bi-encoder on Japanese is close to noise, so BM25 should lead there). languages=None: all covered.
    per_language: (language, weight) pairs that override both (the multilingual base on Japanese)."""
    weight: float = 0.35
    weight_uncovered: float = 0.7
    languages: frozenset[str] | None = frozenset({"en"})
    per_language: tuple[tuple[str, float], ...] = ()

    def weight_for(self, language: str) -> float:
        own = dict(self.per_language).get(language)
        if own is not None:
            return own
        covered = self.languages is None or language in self.languages
        return self.weight if covered else self.weight_uncovered


def request_language(query: str, texts: list[str]) -> str:
    """The language of one request (query and documents): what picks the base that answers it
    (serving/base_routing.py) and the request-local fusion weight, over the same sample: the head of
    each text, so every document has its say, and a request of 50 long passages costs ~1 ms here instead
    of ~7 (20k characters from the first few)."""
    return detect_language([query, *(t[:SAMPLE_CHARS] for t in texts)], max_chars=8_000)


class LexicalPart:
    """What a model adds to its neural score at request time: BM25 with the domain's statistics at the
    version's fusion weights, or BM25 over the request's own documents at `LocalLexical`'s weights.
    Serving (scoring/scorer.py) and training's evaluation (training/evaluate.py) both use it."""

    def __init__(self, stats: LexicalStats | None = None, fusion: Fusion | None = None,
                 local: LocalLexical | None = None):
        if (stats is None) != (fusion is None):
            raise ValueError("a hybrid model needs both lexical statistics and fusion weights")
        self.domain = LexicalScorer(stats.analyzer, stats) if stats is not None else None
        self.fusion, self.local = fusion, local if stats is None else None

    @property
    def active(self) -> bool:
        return self.domain is not None or self.local is not None

    def __call__(self, query: str, texts: list[str]) -> tuple[np.ndarray, tuple[float, float]] | None:
        """(BM25 of each text, fusion weights), or None when this request is not fused (fewer than two
        documents, or a request-local weight of 0)."""
        if len(texts) < 2:
            return None
        if self.domain is not None and self.fusion is not None:
            return self.domain(query, texts), self.fusion.weights
        if self.local is None:
            return None
        language = request_language(query, texts)
        w = self.local.weight_for(language)
        if w <= 0:
            return None
        return LexicalScorer.request_local(language)(query, texts), (1.0 - w, w)
