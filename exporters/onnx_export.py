"""torch -> ONNX (fp32) for any sentence-transformers model.

optimum's exporter cannot be installed beside sentence-transformers 6 (see DESIGN.md), so we export
the whole ST module stack (Transformer + pooling/heads) with torch.onnx.export ourselves.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from exporters.source import Kind


class _Wrapper(torch.nn.Module):
    """Exposes an ST model as tensors-in, tensor-out: logits for cross-encoders, embeddings otherwise."""

    def __init__(self, model: Any, output: str, names: list[str]):
        super().__init__()
        self.model, self.output, self.names = model, output, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        features: dict = dict(zip(self.names, tensors))
        features["modality"] = "text"  # ST 6 modules route on it; a constant while tracing
        return self.model(features)[self.output]


def input_names(model: Any) -> list[str]:
    sample = model.preprocess([["a", "b"]] if hasattr(model, "activation_fn") else ["a"])
    return [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample]


def export_onnx(model: Any, kind: Kind, out_path: Path, opset: int = 17) -> list[str]:
    names = input_names(model)
    output = "scores" if kind == "cross-encoder" else "sentence_embedding"
    sample = model.preprocess([["what is a query", "a passage about things"]] * 2 if kind == "cross-encoder"
                              else ["a passage about things", "another one"])
    args = tuple(sample[n] for n in names)
    wrapper = _Wrapper(model, output, names).eval()
    dyn = {n: {0: "batch", 1: "sequence"} for n in names}
    dyn["output"] = {0: "batch"}
    hf = _hf_model(model)
    saved = getattr(getattr(hf, "config", None), "_attn_implementation", None)
    if saved not in (None, "eager") and hasattr(hf, "set_attn_implementation"):
        # SDPA traces into IsNaN/Where mask ops that onnxruntime's optimizer cannot fuse: that graph ran
        # ~1.4x slower in int8 here (benchmarks/README.md). Eager attention is numerically the same.
        hf.set_attn_implementation("eager")
    try:
        _export(wrapper, args, out_path, names, dyn, opset)
    finally:
        if saved not in (None, "eager") and hasattr(hf, "set_attn_implementation"):
            hf.set_attn_implementation(saved)
    return names


def _hf_model(model: Any) -> Any:
    """The transformers model inside an ST model's first module (None if there is none)."""
    first = model[0] if hasattr(model, "__getitem__") else None
    return getattr(first, "model", None) or getattr(first, "auto_model", None)


def _export(wrapper: torch.nn.Module, args: tuple, out_path: Path, names: list[str], dyn: dict, opset: int) -> None:
    with torch.inference_mode():
        # The TorchScript exporter (dynamo=False) handles BERT's dynamic shapes reliably here.
        torch.onnx.export(wrapper, args, str(out_path), input_names=names, output_names=["output"],
                          dynamic_axes=dyn, opset_version=opset, dynamo=False, do_constant_folding=True)
