"""Scores (query, passages) with one published version directory.

tokenizers + numpy + one inference engine, so a pool replica stays small and loads a model in well
under a second: onnxruntime on `model.onnx` (every version has it), or OpenVINO on `openvino_model.xml`
(the default engine, built by the exporter when it passes parity). Both are dynamic/static int8, or a
wider format (fp16, fp32) when int8 lost parity (the export ladder, exporters/build.py).
A hybrid version (`lexical.json.gz` + `fusion.json`) fuses the neural score with BM25 over the domain's
statistics (scoring/lexical.py, scoring/fusion.py); the neural part stays cacheable, the lexical part
is computed per request.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
from tokenizers import Encoding, Tokenizer

from scoring.cache import EmbeddingCache, entry_key, version_identity
from scoring.engines import OnnxRuntimeEngine, OpenVinoEngine
from scoring.files import (FUSION, LEXICAL_STATS, MANIFEST, MODEL_ONNX, OPENVINO_BIN, OPENVINO_PRECISION,
                           OPENVINO_XML, TOKENIZER, VOCAB_MAP, Engine)
from scoring.fusion import Fusion, LexicalPart, LocalLexical, fuse
from scoring.lexical import LexicalStats
from scoring.windows import Prompts, Windower, aggregate

log = logging.getLogger(__name__)


@dataclass
class Scored:
    scores: np.ndarray  # relevance in 0..1, one per document, in input order
    truncated: int  # documents cut at the per-document token cap (or, with truncate, at the window)
    windows: int = 0  # windows of every document (model inputs, cached ones included)
    cached: int = 0  # documents answered from the embedding cache (bi-encoders)
    fused: bool = False  # scores are sigmoid(z-sum of neural and lexical) (scoring/fusion.py)
    cut: np.ndarray | None = None  # per document: cut by the token cap or the window (None: not known)


class TooManyTokens(ValueError):
    """A request whose windows hold more tokens than the per-request bound; raised after tokenization,
    before any inference."""

    def __init__(self, tokens: int, windows: int, bound: int):
        super().__init__(tokens, windows, bound)  # args: so it pickles across processes
        self.tokens, self.windows, self.bound = tokens, windows, bound

    def __str__(self) -> str:
        return (f"{self.tokens} tokens in {self.windows} windows (every window of every document, query "
                f"included) over the per-request bound of {self.bound}")


class Stopped(RuntimeError):
    """Scoring abandoned between batches: the request's deadline passed or it was cancelled."""


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# OpenVINO keeps compiled kernels per input shape (its runtime cache and oneDNN's primitive cache): with
# every width from 1 to 256 a replica grew by ~4 MB per new shape (+580 MB after 60 varied requests,
# still growing). Widths rounded up to a multiple of 32 plateau at +160 MB and run ~6% faster (fewer
# kernel builds outweigh the padding), measured on 200 varied requests.
WIDTH_MULTIPLE = 32


class VersionScorer:
    """One loaded version. Cross-encoders: sigmoid(logit). Bi-encoders: (cosine + 1) / 2.

    A document longer than the model's window is scored over overlapping windows up to
    `doc_tokens` tokens (scoring/windows.py); its score is its best window's.

    hybrid: fuse with the version's lexical scorer when it ships one (False: the neural part alone).
    local_lexical: for a version without one (the base), fuse with BM25 over the request's own
    documents at these weights (None: neural alone). The lexical part reads what the neural part
    reads: each document up to the token cap (with truncate, up to the model's window)."""

    def __init__(self, version_dir: Path | str, threads: int = 1, max_length: int = 256, batch_size: int = 16,
                 engine: Engine = "onnxruntime", doc_tokens: int = 4096, window_overlap: int = 32,
                 window_aggregate: str = "max", cache: EmbeddingCache | None = None, hybrid: bool = True,
                 local_lexical: LocalLexical | None = None):
        self.dir = Path(version_dir)
        manifest = (self.dir / MANIFEST).read_bytes()
        self.manifest = json.loads(manifest)
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
        # embeddings are cached under what they depend on, not where the directory sits (scoring/cache.py)
        self.identity = version_identity(manifest, engine)
        self.label = str(self.manifest.get("model_id") or self.dir.name)
        self._width_multiple = WIDTH_MULTIPLE if engine == "openvino" else 1  # onnxruntime keeps no per-shape kernels
        self.threads = threads
        self._infer = (OpenVinoEngine(self.dir / OPENVINO_XML, threads, self.manifest.get(OPENVINO_PRECISION))
                       if engine == "openvino"
                       else OnnxRuntimeEngine(self.dir / MODEL_ONNX, threads))
        self.input_names = self._infer.input_names
        self.windows = Windower(Tokenizer.from_file(str(self.dir / TOKENIZER)), self.kind,
                                min(max_length, int(self.manifest.get("max_length", max_length))), window_overlap)
        self.pad_id = int(self.manifest.get("pad_token_id", 0))
        # a pruned vocabulary (exporters/vocabulary.py): tokenizer ids -> rows of the model's smaller table
        self.id_map = (np.load(self.dir / VOCAB_MAP, allow_pickle=False) if (self.dir / VOCAB_MAP).is_file()
                       else None)
        self.prompts = Prompts.from_manifest(self.manifest)  # what the neural part reads; BM25 reads the text
        self.hybrid = hybrid and (self.dir / LEXICAL_STATS).is_file()
        self.lexical = (LexicalPart(LexicalStats.load(self.dir / LEXICAL_STATS), Fusion.load(self.dir / FUSION))
                        if self.hybrid else LexicalPart(local=local_lexical))

    @property
    def inference_precision(self) -> str | None:
        """OpenVINO's CPU inference precision for this model (None with onnxruntime)."""
        return getattr(self._infer, "precision", None)

    @property
    def language(self) -> str | None:
        """The domain's language (from its lexical statistics); None for a version without them."""
        return self.lexical.domain.analyzer.language if self.lexical.domain else None

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
            rounded = -(-width // self._width_multiple) * self._width_multiple
            width = rounded if rounded <= self.max_length else width
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
            if self.id_map is not None:  # a pruned vocabulary: tokenizer ids -> rows of the smaller table
                feed["input_ids"] = self.id_map[feed["input_ids"]].astype(np.int64)
            yield idx, feed

    def _run(self, encs: list[Encoding], stop: Callable[[], bool] | None = None) -> np.ndarray:
        """Outputs in input order. `stop()` is asked before each batch: True abandons the request."""
        outs: list[np.ndarray] = [None] * len(encs)  # type: ignore[list-item]
        for idx, feed in self._batches(encs):
            if stop is not None and stop():
                raise Stopped("scoring stopped: deadline passed or request cancelled")
            out = self._infer(feed)
            for row, i in enumerate(idx):
                outs[i] = out[row]
        return np.stack(outs) if outs else np.zeros((0, 1), dtype=np.float32)

    def feeds(self, query: str, documents: list[str]) -> list[dict[str, np.ndarray]]:
        """The engine inputs score() would run for this request (calibration data for static int8)."""
        query, documents = self.prompts.apply(query, documents)
        query_enc, w = self.windows.encode(query, documents, self.doc_tokens)
        return [feed for _, feed in self._batches(([query_enc] if query_enc else []) + w.encodings)]

    # -- scoring --------------------------------------------------------------------------------
    def score(self, query: str, documents: list[str], max_tokens_per_doc: int | None = None,
              truncate: bool = False, max_total_tokens: int | None = None,
              stop: Callable[[], bool] | None = None) -> Scored:
        """max_tokens_per_doc: this request's per-document token cap (default: doc_tokens).
        truncate: score only each document's first window, as a plain truncating reranker does.
        max_total_tokens: refuse (TooManyTokens) a request whose model inputs hold more tokens.
        stop: asked between batches; True raises Stopped (a deadline or a cancelled request)."""
        if not documents:
            return Scored(np.zeros(0, dtype=np.float32), 0, 0)
        cap = max_tokens_per_doc or self.doc_tokens
        neural = self.score_neural(query, documents, cap, truncate, max_total_tokens, stop)
        lexical = self.lexical_part(query, documents, cap, truncate, neural.cut)
        if lexical is None:
            return neural
        scores, weights = lexical
        return replace(neural, scores=fuse(neural.scores, scores, weights), fused=True)

    def lexical_part(self, query: str, documents: list[str], cap: int, truncate: bool = False,
                     cut: np.ndarray | None = None) -> tuple[np.ndarray, tuple[float, float]] | None:
        """(BM25 of each document, fusion weights), or None when this request is not fused. BM25 reads
        each document as the neural part does: up to the token cap (truncate: up to the window).
        cut: the neural part's per-document flags; a document it read whole (prompt, query and special
        tokens included) fits the lexical cap too, so only the cut ones are tokenized again: a request of
        stored passages then tokenizes nothing but its query."""
        if not self.lexical.active or len(documents) < 2:
            return None
        limit = self.max_length if truncate else cap
        if cut is None:
            texts, _ = self.windows.cap_documents(documents, limit)
        else:
            texts, long = list(documents), np.flatnonzero(cut)
            capped, _ = self.windows.cap_documents([documents[i] for i in long], limit)
            for i, text in zip(long, capped):
                texts[i] = text
        return self.lexical(query, texts)

    def score_neural(self, query: str, documents: list[str], cap: int, truncate: bool = False,
                     max_total_tokens: int | None = None, stop: Callable[[], bool] | None = None) -> Scored:
        """The neural part alone (sigmoid(logit) or (cosine + 1) / 2), max over windows."""
        query, documents = self.prompts.apply(query, documents)
        if self.kind == "bi-encoder":
            return self._score_bi_encoder(query, documents, cap, truncate, max_total_tokens, stop)
        _, w = self.windows.encode(query, documents, cap, first_only=truncate)
        _within_bound(w.encodings, len(w.encodings), max_total_tokens)
        logits = self._run(w.encodings, stop).reshape(len(w.encodings), -1)[:, 0]
        per_window = sigmoid(logits) if self.activation == "sigmoid" else logits
        scores = aggregate(per_window.astype(np.float32), w.owner, len(documents), self.window_aggregate)
        return Scored(scores, w.truncated, len(w.encodings), cut=w.cut)

    def _score_bi_encoder(self, query: str, documents: list[str], cap: int, truncate: bool,
                          max_total_tokens: int | None, stop: Callable[[], bool] | None) -> Scored:
        """(cos(query, window) + 1) / 2 per window; passage windows come from the cache when it has them
        (the token bound counts only what runs through the model)."""
        setting = (self.max_length, self.windows.overlap, cap, truncate)
        keys = [entry_key(self.identity, setting, d) for d in documents] if self.cache is not None else []
        entries = self.cache.get_many(keys) if keys else [None] * len(documents)
        missing = [i for i, e in enumerate(entries) if e is None]
        query_enc, w = self.windows.encode(query, [documents[i] for i in missing], cap, first_only=truncate)
        inputs = [query_enc, *w.encodings]
        _within_bound(inputs, len(w.encodings), max_total_tokens)
        emb = self._run(inputs, stop).astype(np.float32)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        # with a cache, passage embeddings are fp16 whichever tier answers (memory, store or the model),
        # so a stored passage scores exactly as a fresh one
        passages = emb[1:].astype(np.float16) if keys else emb[1:]
        for j, i in enumerate(missing):
            entries[i] = (passages[w.owner == j], bool(w.cut[j]))
        if keys:
            self.cache.put_many([(keys[i], entries[i]) for i in missing], self.label)
        owner = np.concatenate([np.full(len(e[0]), i) for i, e in enumerate(entries)])
        per_window = (np.concatenate([e[0] for e in entries]).astype(np.float32) @ emb[0] + 1.0) / 2.0
        scores = aggregate(per_window.astype(np.float32), owner, len(documents), self.window_aggregate)
        cut = np.array([e[1] for e in entries], dtype=bool)
        return Scored(scores, int(cut.sum()), len(owner), len(documents) - len(missing), cut=cut)

    def embed(self, documents: list[str], max_tokens_per_doc: int | None = None) -> int:
        """Put the documents' passage embeddings in the cache (and the store behind it) ahead of any
        request; returns how many were computed (the rest were there). 0 for a cross-encoder or without a
        cache: there is nothing a later request could reuse."""
        if self.cache is None or not documents:
            return 0
        scored = self._score_bi_encoder("", documents, max_tokens_per_doc or self.doc_tokens, False, None, None)
        return len(documents) - scored.cached


def _within_bound(inputs: list[Encoding], windows: int, bound: int | None) -> None:
    """The per-request token bound, over every model input of the request (before any inference)."""
    if bound is not None:
        tokens = sum(len(e.ids) for e in inputs)
        if tokens > bound:
            raise TooManyTokens(tokens, windows, bound)


def load_check(version_dir: Path | str, engine: Engine) -> None:
    """A version must load and score with the engine that will serve it before it may serve; raises
    on any problem (the other engine's files are covered by the registry's sha256 check)."""
    # two documents: a hybrid version's lexical part and fusion run too
    VersionScorer(version_dir, threads=1, engine=engine).score("check", ["check", "a second check"])


def shipped_engines(version_dir: Path | str) -> list[Engine]:
    """The engines a version directory ships files for: onnxruntime always (`model.onnx`), OpenVINO
    when its xml/bin pair is there; half a pair is an error, not a silent fallback."""
    d = Path(version_dir)
    engines: list[Engine] = ["onnxruntime"]
    has_xml, has_bin = (d / OPENVINO_XML).is_file(), (d / OPENVINO_BIN).is_file()
    if has_xml != has_bin:
        present, absent = (OPENVINO_XML, OPENVINO_BIN) if has_xml else (OPENVINO_BIN, OPENVINO_XML)
        raise ValueError(f"{present} is there without {absent}")
    if has_xml:
        engines.append("openvino")
    return engines


def load_check_shipped(version_dir: Path | str) -> None:
    """Every engine file a version ships must load and score, whichever engine serves today: a switch
    of RERANKER_ENGINE must never reach an unchecked model."""
    for engine in shipped_engines(version_dir):
        try:
            load_check(version_dir, engine)
        except Exception as e:  # noqa: BLE001 - name the file that failed
            name = OPENVINO_XML if engine == "openvino" else MODEL_ONNX
            raise ValueError(f"{name} does not load with {engine}: {e}") from e
