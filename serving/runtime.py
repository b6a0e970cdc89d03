"""Torch-free scoring of (query, passage) pairs with an ONNX version directory.

tokenizers + onnxruntime + numpy only, so a pool replica stays small and loads a model in ~0.2 s.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


@dataclass
class Scored:
    scores: np.ndarray  # relevance in 0..1, one per document, in input order
    truncated: int  # documents cut to fit max_length


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class OnnxReranker:
    """One loaded version. Cross-encoders: sigmoid(logit). Bi-encoders: (cosine + 1) / 2."""

    def __init__(self, version_dir: Path | str, threads: int = 1, max_length: int = 256, batch_size: int = 16):
        self.dir = Path(version_dir)
        self.manifest = json.loads((self.dir / "manifest.json").read_text())
        self.kind = self.manifest["kind"]
        self.activation = self.manifest.get("activation", "sigmoid")
        self.max_length = min(max_length, int(self.manifest.get("max_length", max_length)))
        self.batch_size = batch_size
        opts = ort.SessionOptions()
        # onnxruntime ignores OMP_NUM_THREADS and would spin a pool per session: pin it.
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # The arena kept ~360 MB per model after a request (DESIGN.md); off keeps the LRU pool bounded.
        opts.enable_cpu_mem_arena = False
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer = Tokenizer.from_file(str(self.dir / "tokenizer.json"))
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

    def _run(self, encs: list) -> np.ndarray:
        """Run in length-sorted batches (less padding), return outputs in input order."""
        order = np.argsort([len(e.ids) for e in encs], kind="stable")
        outs: list[np.ndarray] = [None] * len(encs)  # type: ignore[list-item]
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
            out = self.session.run(None, feed)[0]
            for row, i in enumerate(idx):
                outs[i] = out[row]
        return np.stack(outs) if outs else np.zeros((0, 1), dtype=np.float32)

    # -- scoring --------------------------------------------------------------------------------
    def score(self, query: str, documents: list[str]) -> Scored:
        if not documents:
            return Scored(np.zeros(0, dtype=np.float32), 0)
        if self.kind == "cross-encoder":
            q = self._cap_query(query)
            encs, truncated = self._encode([(q, d) for d in documents], pairs=True)
            logits = self._run(encs).reshape(len(documents), -1)[:, 0]
            scores = sigmoid(logits) if self.activation == "sigmoid" else logits
            return Scored(scores.astype(np.float32), truncated)
        encs, truncated = self._encode([query, *documents], pairs=False)
        truncated -= 1 if encs[0].overflowing else 0  # the query is not a document
        emb = self._run(encs).astype(np.float32)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        cos = emb[1:] @ emb[0]
        return Scored(((cos + 1.0) / 2.0).astype(np.float32), truncated)
