"""Graph fusion (onnxruntime's transformer optimizer) and dynamic int8 quantization."""
from __future__ import annotations

import logging
from pathlib import Path

from onnxruntime.quantization import QuantType, quantize_dynamic

log = logging.getLogger(__name__)


def fuse(src: Path, dst: Path, model_type: str = "bert") -> bool:
    """Fuse attention/layernorm/gelu; returns False (and copies nothing) if the optimizer can't."""
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        opt = optimize_model(str(src), model_type=model_type, num_heads=0, hidden_size=0, opt_level=1)
        opt.save_model_to_file(str(dst))
        return True
    except Exception as e:  # noqa: BLE001 - unknown architectures stay unfused, still correct
        log.warning("graph fusion skipped: %s", e)
        return False


def quantize_int8(src: Path, dst: Path) -> None:
    # per_channel: more accurate and faster than per-tensor here (DESIGN.md). DefaultTensorType is
    # needed for fused graphs whose contrib ops have no type info.
    quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": 1})
