"""BM25 first stage over a corpus (bm25s, English stemming): candidates for evaluation and hard negatives."""
from __future__ import annotations

import bm25s
import Stemmer


class BM25Index:
    def __init__(self, corpus: dict[str, str]):
        self.ids = list(corpus)
        self.stemmer = Stemmer.Stemmer("english")
        tokens = bm25s.tokenize([corpus[i] for i in self.ids], stopwords="en", stemmer=self.stemmer,
                                show_progress=False)
        self.retriever = bm25s.BM25()
        self.retriever.index(tokens, show_progress=False)

    def search(self, queries: dict[str, str], k: int) -> dict[str, dict[str, float]]:
        """query id -> {doc id: bm25 score} for the top k."""
        if not queries:
            return {}
        qids = list(queries)
        tokens = bm25s.tokenize([queries[q] for q in qids], stopwords="en", stemmer=self.stemmer,
                                show_progress=False)
        k = min(k, len(self.ids))
        docs, scores = self.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return {q: {self.ids[int(d)]: float(s) for d, s in zip(docs[i], scores[i])} for i, q in enumerate(qids)}
