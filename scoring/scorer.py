"""Scores (query, passages) with one published version directory.

tokenizers + numpy + one inference engine, so a pool replica stays small and loads a model in well
under a second: onnxruntime on `model.onnx` (dynamic int8, every version has it), or OpenVINO on
`openvino_model.xml` (static int8, the default engine, built by the exporter when it passes parity).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from scoring.cache import EmbeddingCache, text_key
from scoring.engines import OnnxRuntimeEngine, OpenVinoEngine
from scoring.files import MANIFEST, MODEL_ONNX, OPENVINO_XML, TOKENIZER, Engine
from scoring.windows import Windower, aggregate

log = logging.getLogger(__name__)


@dataclass
class Scored:
    scores: np.ndarray  # relevance in 0..1, one per document, in input order
    truncated: int  # documents cut at the per-document token cap (or, with truncate, at the window)
    windows: int = 0  # windows of every document (model inputs, cached ones included)
    cached: int = 0  # documents answered from the embedding cache (bi-encoders)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class VersionScorer:
    """One loaded version. Cross-encoders: sigmoid(logit). Bi-encoders: (cosine + 1) / 2.

    A document longer than the model's window is scored over overlapping windows up to
    `doc_tokens` tokens (scoring/windows.py); its score is its best window's."""

    def __init__(self, version_dir: Path | str, threads: int = 1, max_length: int = 256, batch_size: int = 16,
                 engine: Engine = "onnxruntime", doc_tokens: int = 4096, window_overlap: int = 32,
                 window_aggregate: str = "max", cache: EmbeddingCache | None = None):
        self.dir = Path(version_dir)
        self.manifest = json.loads((self.dir / MANIFEST).read_text())
        self.kind = self.manifest["kind"]
        self.activation = self.manifest.get("activation", "sigmoid")
        self.batch_size = batch_size
        self.doc_tokens, self.window_aggregate = doc_tokens, window_aggregate
        self.cache = cache if self.kind == "bi-encoder" else None  # a cross-encoder's input has the query
        if engine == "openvino" and not (self.dir / OPENVINO_XML).is_file():
            # a version exported without it (the exporter deletes one that fails parity) still serves
            log.info("%s has no OpenVINO model: using onnxruntime", self.dir)
            engine = "onnxruntime"
        self.engine: Engine = engine
        self.threads = threads
        self._infer = (OpenVinoEngine(self.dir / OPENVINO_XML, threads) if engine == "openvino"
                       else OnnxRuntimeEngine(self.dir / MODEL_ONNX, threads))
        self.input_names = self._infer.input_names
        self.windows = Windower(Tokenizer.from_file(str(self.dir / TOKENIZER)), self.kind,
                                min(max_length, int(self.manifest.get("max_length", max_length))), window_overlap)
        self.pad_id = int(self.manifest.get("pad_token_id", 0))

    @property
    def max_length(self) -> int:
        return self.windows.max_length

    @max_length.setter
    def max_length(self, value: int) -> None:
        self.windows.max_length = value

    # -- engine inputs ----------------------------------------------------------------------------
    def _batches(self, encs: list[Encoding]):
        """Length-sorted batches (less padding) as (input positions, feed)."""
        order = np.argsort([len(e.ids) for e in encs], kind="stable")
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            width = max(len(encs[i].ids) for i in idx)
            feed = {n: np.zeros((len(idx), width), dtype=np.int64) for n in self.input_names}
            if "input_ids" in feed:
                feed["input_ids"].fill(self.pad_id)
            for row, i in enumerate(idx):
                e, n = encs[i], len(encs[i].ids)
                feed["input_ids"][row, :n] = e.ids
                if "attention_mask" in feed:
                    feed["attention_mask"][row, :n] = 1
                if "token_type_ids" in feed:
                    feed["token_type_ids"][row, :n] = e.type_ids
            yield idx, feed

    def _run(self, encs: list[Encoding]) -> np.ndarray:
        """Outputs in input order."""
        outs: list[np.ndarray] = [None] * len(encs)  # type: ignore[list-item]
        for idx, feed in self._batches(encs):
            out = self._infer(feed)
            for row, i in enumerate(idx):
                outs[i] = out[row]
        return np.stack(outs) if outs else np.zeros((0, 1), dtype=np.float32)

    def feeds(self, query: str, documents: list[str]) -> list[dict[str, np.ndarray]]:
        """The engine inputs score() would run for this request (calibration data for static int8)."""
        query_enc, w = self.windows.encode(query, documents, self.doc_tokens)
        return [feed for _, feed in self._batches(([query_enc] if query_enc else []) + w.encodings)]

    # -- scoring --------------------------------------------------------------------------------
    def score(self, query: str, documents: list[str], max_tokens_per_doc: int | None = None,
              truncate: bool = False) -> Scored:
        """max_tokens_per_doc: this request's per-document token cap (default: doc_tokens).
        truncate: score only each document's first window, as a plain truncating reranker does."""
        if not documents:
            return Scored(np.zeros(0, dtype=np.float32), 0, 0)
        cap = max_tokens_per_doc or self.doc_tokens
        if self.kind == "bi-encoder":
            return self._score_bi_encoder(query, documents, cap, truncate)
        _, w = self.windows.encode(query, documents, cap, first_only=truncate)
        logits = self._run(w.encodings).reshape(len(w.encodings), -1)[:, 0]
        per_window = sigmoid(logits) if self.activation == "sigmoid" else logits
        scores = aggregate(per_window.astype(np.float32), w.owner, len(documents), self.window_aggregate)
        return Scored(scores, w.truncated, len(w.encodings))

    def _score_bi_encoder(self, query: str, documents: list[str], cap: int, truncate: bool) -> Scored:
        """(cos(query, window) + 1) / 2 per window; passage windows come from the cache when it has them."""
        setting = (str(self.dir), self.max_length, self.windows.overlap, cap, truncate)
        keys = [(setting, text_key(d)) for d in documents] if self.cache is not None else []
        entries = [self.cache.get(k) for k in keys] if keys else [None] * len(documents)
        missing = [i for i, e in enumerate(entries) if e is None]
        query_enc, w = self.windows.encode(query, [documents[i] for i in missing], cap, first_only=truncate)
        emb = self._run([query_enc, *w.encodings]).astype(np.float32)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        for j, i in enumerate(missing):
            entries[i] = (emb[1:][w.owner == j], bool(w.cut[j]))
            if keys:
                self.cache.put(keys[i], entries[i])
        owner = np.concatenate([np.full(len(e[0]), i) for i, e in enumerate(entries)])
        per_window = (np.concatenate([e[0] for e in entries]) @ emb[0] + 1.0) / 2.0
        scores = aggregate(per_window.astype(np.float32), owner, len(documents), self.window_aggregate)
        return Scored(scores, sum(e[1] for e in entries), len(owner), len(documents) - len(missing))


def load_check(version_dir: Path | str, engine: Engine) -> None:
    """A version must load and score with the engine that will serve it before it may serve; raises
    on any problem (the other engine's files are covered by the registry's sha256 check)."""
    VersionScorer(version_dir, threads=1, engine=engine).score("check", ["check"])
