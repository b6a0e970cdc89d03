"""Vocabulary pruning (issue 21 item 4): a version keeps the embedding rows of the pieces its domain's
texts use (and the special tokens); any other piece reads <unk>'s row.

multilingual-e5-small's 250k x 384 word-embedding table is ~96 MB of its ~135 MB int8 version, in every
loaded version, while one domain's corpus and queries use a few percent of the pieces. The tokenizer
stays whole: the scorer maps its ids through `vocab_map.npy` (scoring/scorer.py) onto the smaller
table before inference; the torch model reads its table through the same map (`Remapped`), so parity,
evaluation and the served model compute one function. Neither transformers nor onnxruntime prunes a
trained model's vocabulary: these few lines of torch do.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from exporters.source import prompts_of


class Remapped(torch.nn.Module):
    """An embedding table over the kept pieces, read through the tokenizer-id -> row map; while
    `mapping` is off (the ONNX export), ids are rows already (the scorer maps them)."""

    def __init__(self, table: torch.nn.Embedding, id_map: np.ndarray):
        super().__init__()
        self.table = table
        self.register_buffer("id_map", torch.from_numpy(id_map.astype(np.int64)), persistent=False)
        self.mapping = True

    @property
    def weight(self) -> torch.Tensor:  # what transformers reads of an input embedding (dtype, device)
        return self.table.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(self.id_map[ids] if self.mapping else ids)


def _embeddings(model: Any) -> Any:
    """The transformers embeddings module of a sentence-transformers model."""
    first = model[0]
    hf = getattr(first, "auto_model", None) or getattr(first, "model", None)
    return hf.embeddings


def kept_pieces(tokenizer: Any, texts: list[str], specials: Iterable[int]) -> np.ndarray:
    """The sorted ids of every piece `texts` use (a `tokenizers.Tokenizer`), and the special tokens."""
    used = {i for enc in tokenizer.encode_batch(texts, add_special_tokens=False) for i in enc.ids}
    return np.array(sorted(used | set(specials)), dtype=np.int64)


def row_map(keep: np.ndarray, size: int, unk: int) -> np.ndarray:
    """Tokenizer id -> row of the table that keeps `keep` (in order); every other id -> <unk>'s row."""
    id_map = np.full(size, -1, dtype=np.int32)
    id_map[keep] = np.arange(len(keep), dtype=np.int32)
    id_map[id_map < 0] = id_map[unk]
    return id_map


def prune(model: Any, texts: Iterable[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Keep the rows of the pieces `texts` use (prompts and special tokens always); returns the
    tokenizer-id -> row map (int32, what the version ships as vocab_map.npy) and the manifest's record."""
    tokenizer = model.tokenizer
    emb = _embeddings(model)
    table: torch.nn.Embedding = emb.word_embeddings
    size = table.num_embeddings
    prompts = prompts_of(model)
    texts = [*texts, prompts.query, prompts.passage]
    keep = kept_pieces(tokenizer.backend_tokenizer, texts, tokenizer.all_special_ids)
    id_map = row_map(keep, size, tokenizer.unk_token_id)
    small = torch.nn.Embedding(len(keep), table.embedding_dim,
                               padding_idx=None if table.padding_idx is None else int(id_map[table.padding_idx]))
    small.weight.data = table.weight.data[torch.from_numpy(keep)].clone()
    emb.word_embeddings = Remapped(small, id_map)
    dim = table.embedding_dim
    return id_map, {"pieces": int(len(keep)), "of": int(size), "unseen": "<unk>", "texts": len(texts) - 2,
                    "table_mb_int8": round(len(keep) * dim / 1e6, 1), "full_table_mb_int8": round(size * dim / 1e6, 1)}


@contextmanager
def exporting(model: Any) -> Iterator[None]:
    """The ONNX graph reads rows directly, so that it stays the plain Gather that onnxruntime's optimizer
    fuses (the scorer maps the ids): while it is traced the map is off, and the trace's sample input
    (model.preprocess) is mapped instead."""
    remapped = [m for m in model.modules() if isinstance(m, Remapped)]
    if not remapped:
        yield
        return
    id_map = remapped[0].id_map
    preprocess = model.preprocess

    def mapped(*args: Any, **kwargs: Any) -> Any:
        features = preprocess(*args, **kwargs)
        features["input_ids"] = id_map[features["input_ids"]]
        return features

    model.preprocess = mapped  # this instance only, until the export is traced
    for m in remapped:
        m.mapping = False
    try:
        yield
    finally:
        del model.preprocess
        for m in remapped:
            m.mapping = True
