"""The language-aware BM25 first stage over a corpus (bm25s over scoring.lexical's analysis): candidates
for evaluation and hard negatives, and the domain statistics the served lexical scorer ships with."""
from __future__ import annotations

import bm25s
import numpy as np

from scoring.lexical import Analyzer, LexicalStats, detect_language

LANGUAGE_SAMPLE = 2000  # passages (and as many queries) read to detect a domain's language


def domain_language(corpus: dict[str, str], queries: list[str] | None = None) -> str:
    """The language of a domain's data: a sample of its passages and queries (scoring.lexical)."""
    step = max(1, len(corpus) // LANGUAGE_SAMPLE)
    sample = list(corpus.values())[::step][:LANGUAGE_SAMPLE] + list(queries or [])[:LANGUAGE_SAMPLE]
    return detect_language(sample)


class BM25Index:
    def __init__(self, corpus: dict[str, str], analyzer: Analyzer | None = None):
        """analyzer: the domain's (default: detected from the corpus)."""
        self.ids = list(corpus)
        self.analyzer = analyzer or Analyzer(domain_language(corpus))
        tokens = self.analyzer.batch([corpus[i] for i in self.ids])
        # the served scorer's statistics come from the very tokens the first stage indexes
        self.stats = LexicalStats.fit(tokens, self.analyzer)
        self.retriever = bm25s.BM25(k1=self.stats.k1, b=self.stats.b, method="lucene")
        self.retriever.index(tokens, show_progress=False)
        self.vocab = self.retriever.vocab_dict

    def search(self, queries: dict[str, str], k: int) -> dict[str, dict[str, float]]:
        """query id -> {doc id: bm25 score} for the top k with a score > 0, best first (a query with no
        term of the corpus gets no candidates: nothing is injected)."""
        out: dict[str, dict[str, float]] = {}
        k = min(k, len(self.ids))
        for q, text in queries.items():
            toks = [t for t in self.analyzer(text) if t in self.vocab]
            if not toks or k <= 0:
                out[q] = {}
                continue
            scores = self.retriever.get_scores(toks)
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.lexsort((top, -scores[top]))]  # best first, ties by corpus order
            out[q] = {self.ids[int(i)]: float(scores[i]) for i in top if scores[i] > 0}
        return out
