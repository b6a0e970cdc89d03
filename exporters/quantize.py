"""Graph fusion (onnxruntime's transformer optimizer), dynamic int8 quantization and the wider rungs of
the export ladder (fp16, fp32)."""
from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

log = logging.getLogger(__name__)

# Quantization recipes, tried in order until parity passes. "full" is fastest; "keep-head-fp32" keeps
# the embeddings, the last encoder layer and the scoring head in fp32: the usual remedy when a lightly
# trained cross-encoder's narrow logit range drowns in int8 noise. "ffn-only" quantizes just the
# feed-forward MatMuls (2/3 of the weights): the most accurate rung, ~1.2x the ms/pair of "full"
# (training/README.md has the fine-tuned model that needed it).
RECIPES = ("full", "keep-head-fp32", "ffn-only")
# The export ladder (exporters/build.py): the int8 recipes, then wider formats, tried in this order until
# one keeps parity within the latency and size limits, so that no model that passed the quality gate is
# lost to int8 noise. "fp16": weights and activations in float16 (half the fp32 size; onnxruntime's CPU
# provider casts ops without a fp16 kernel back to fp32); "fp32": the (fused) export itself.
LADDER = RECIPES + ("fp16", "fp32")


def precision(rung: str) -> str:
    """int8, fp16 or fp32: the number format of a rung's model.onnx."""
    return "int8" if rung in RECIPES else rung


def describe(rung: str) -> str:
    return {"fp16": "fp16 weights and activations (fp32 inputs and outputs)",
            "fp32": "fp32, not quantized"}.get(rung, f"dynamic int8 per-channel ({rung})")


def write_rung(src: Path, dst: Path, rung: str) -> None:
    """Write `rung` of the ladder to dst from the fp32 graph src (fused or not)."""
    if rung == "fp32":
        shutil.copyfile(src, dst)
    elif rung == "fp16":
        from onnxruntime.transformers.onnx_model import OnnxModel

        model = OnnxModel(onnx.load(str(src)))
        # keep_io_types: the scorer feeds int64 ids and reads fp32 scores whatever the rung
        model.convert_float_to_float16(keep_io_types=True)
        model.save_model_to_file(str(dst))
    else:
        quantize_int8(src, dst, rung)


def fuse(src: Path, dst: Path, model_type: str = "bert") -> bool:
    """Fuse layernorm/gelu/bias; returns False (and copies nothing) if the optimizer can't."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    # The fused Attention op (QAttention once quantized) measured slower than int8 MatMuls with ORT's
    # own FusedMatMul/Softmax (benchmarks/README.md), so attention stays unfused.
    options = FusionOptions(model_type)
    options.enable_attention = False
    try:
        opt = optimize_model(str(src), model_type=model_type, num_heads=0, hidden_size=0, opt_level=1,
                             optimization_options=options)
        opt.save_model_to_file(str(dst))
        return True
    except Exception as e:  # noqa: BLE001 - unknown architectures stay unfused, still correct
        log.warning("graph fusion skipped: %s", e)
        return False


def _node_names(path: Path) -> list[str]:
    return [n.name for n in onnx.load(str(path), load_external_data=False).graph.node]


def _head_nodes(path: Path) -> list[str]:
    names = _node_names(path)
    layers = [int(m.group(1)) for n in names if (m := re.search(r"layer\.(\d+)/", n))]
    last = f"layer.{max(layers)}/" if layers else "\0"
    # everything outside the encoder stack (pooler, classifier, ST Dense heads) plus its last layer
    return [n for n in names if "encoder/layer." not in n or last in n]


def quantize_int8(src: Path, dst: Path, recipe: str = "full") -> None:
    # per_channel: more accurate and faster than per-tensor here (DESIGN.md). DefaultTensorType is
    # needed for fused graphs whose contrib ops have no type info.
    kwargs: dict = {}
    if recipe == "keep-head-fp32":
        kwargs = {"op_types_to_quantize": ["MatMul", "Attention"], "nodes_to_exclude": _head_nodes(src)}
    elif recipe == "ffn-only":
        names = _node_names(src)
        ffn = {n for n in names if re.search(r"layer\.\d+/(intermediate|output)/dense", n)}
        kwargs = {"op_types_to_quantize": ["MatMul"], "nodes_to_exclude": [n for n in names if n not in ffn]}
    elif recipe != "full":
        raise ValueError(f"unknown quantization recipe {recipe!r}")
    quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": 1}, **kwargs)
