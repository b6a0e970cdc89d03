"""Scores (query, passages) with one published version directory.

tokenizers + numpy + one inference engine, so a pool replica stays small and loads a model in well
under a second: onnxruntime on `model.onnx` (dynamic int8, every version has it), or OpenVINO on
`openvino_model.xml` (static int8, the default engine, built by the exporter when it passes parity).
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from scoring.engines import OnnxRuntimeEngine, OpenVinoEngine
from scoring.files import MANIFEST, MODEL_ONNX, OPENVINO_BIN, OPENVINO_XML, TOKENIZER, Engine

log = logging.getLogger(__name__)


@dataclass
class Scored:
    scores: np.ndarray  # relevance in 0..1, one per document, in input order
    truncated: int  # documents cut to fit max_length


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class VersionScorer:
    """One loaded version. Cross-encoders: sigmoid(logit). Bi-encoders: (cosine + 1) / 2."""

    def __init__(self, version_dir: Path | str, threads: int = 1, max_length: int = 256, batch_size: int = 16,
                 engine: Engine = "onnxruntime"):
        self.dir = Path(version_dir)
        self.manifest = json.loads((self.dir / MANIFEST).read_text())
        self.kind = self.manifest["kind"]
        self.activation = self.manifest.get("activation", "sigmoid")
        self.max_length = min(max_length, int(self.manifest.get("max_length", max_length)))
        self.batch_size = batch_size
        if engine == "openvino" and not (self.dir / OPENVINO_XML).is_file():
            # a version exported without it (the exporter deletes one that fails parity) still serves
            log.info("%s has no OpenVINO model: using onnxruntime", self.dir)
            engine = "onnxruntime"
        self.engine: Engine = engine
        self.threads = threads
        self._infer = (OpenVinoEngine(self.dir / OPENVINO_XML, threads) if engine == "openvino"
                       else OnnxRuntimeEngine(self.dir / MODEL_ONNX, threads))
        self.input_names = self._infer.input_names
        self.tokenizer = Tokenizer.from_file(str(self.dir / TOKENIZER))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        # Truncation is tokenizer state and the pool scores from several threads at once: without
        # this lock one thread's no_truncation() let another encode 705 tokens into a 512-position
        # model (an onnxruntime broadcast error, HTTP 500, seen under benchmarks/hotswap load).
        self._tok_lock = threading.Lock()
        self.pad_id = int(self.manifest.get("pad_token_id", 0))

    # -- tokenization -------------------------------------------------------------------------
    def _cap_query(self, query: str) -> str:
        """Keep the query whole unless it alone would eat more than half the budget."""
        with self._tok_lock:
            self.tokenizer.no_truncation()
            enc = self.tokenizer.encode(query, add_special_tokens=False)
        limit = self.max_length // 2
        if len(enc.ids) <= limit:
            return query
        return query[: enc.offsets[limit - 1][1]]

    def _encode(self, texts: list, pairs: bool) -> tuple[list, int]:
        strategy = "only_second" if pairs else "longest_first"
        with self._tok_lock:
            self.tokenizer.enable_truncation(self.max_length, strategy=strategy)
            encs = self.tokenizer.encode_batch(texts)
            self.tokenizer.no_truncation()
        return encs, sum(1 for e in encs if e.overflowing)

    def _batches(self, encs: list):
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

    def _run(self, encs: list) -> np.ndarray:
        """Outputs in input order."""
        outs: list[np.ndarray] = [None] * len(encs)  # type: ignore[list-item]
        for idx, feed in self._batches(encs):
            out = self._infer(feed)
            for row, i in enumerate(idx):
                outs[i] = out[row]
        return np.stack(outs) if outs else np.zeros((0, 1), dtype=np.float32)

    def _encode_request(self, query: str, documents: list[str]) -> tuple[list, int]:
        """Encodings of one request (pairs for a cross-encoder, [query, *docs] for a bi-encoder)."""
        if self.kind == "cross-encoder":
            return self._encode([(self._cap_query(query), d) for d in documents], pairs=True)
        encs, truncated = self._encode([query, *documents], pairs=False)
        return encs, truncated - (1 if encs[0].overflowing else 0)  # the query is not a document

    def feeds(self, query: str, documents: list[str]) -> list[dict[str, np.ndarray]]:
        """The engine inputs score() would run for this request (calibration data for static int8)."""
        return [feed for _, feed in self._batches(self._encode_request(query, documents)[0])]

    # -- scoring --------------------------------------------------------------------------------
    def score(self, query: str, documents: list[str]) -> Scored:
        if not documents:
            return Scored(np.zeros(0, dtype=np.float32), 0)
        encs, truncated = self._encode_request(query, documents)
        if self.kind == "cross-encoder":
            logits = self._run(encs).reshape(len(documents), -1)[:, 0]
            scores = sigmoid(logits) if self.activation == "sigmoid" else logits
            return Scored(scores.astype(np.float32), truncated)
        emb = self._run(encs).astype(np.float32)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        cos = emb[1:] @ emb[0]
        return Scored(((cos + 1.0) / 2.0).astype(np.float32), truncated)


def load_check(version_dir: Path | str, engine: Engine) -> None:
    """A version must load and score with the engine that will serve it before it may serve; raises
    on any problem (the other engine's files are covered by the registry's sha256 check)."""
    VersionScorer(version_dir, threads=1, engine=engine).score("check", ["check"])


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
