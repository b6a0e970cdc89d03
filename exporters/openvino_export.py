"""Static int8 for OpenVINO (NNCF post-training quantization), written next to the onnxruntime model.

Why a second engine: onnxruntime's dynamic int8 computes activation scales per call and leaves the
attention matmuls in fp32; a static int8 graph (scales calibrated once, on the same real pairs the
parity check uses) runs every matmul in int8 and is faster (figures: benchmarks/README.md).
NNCF does the calibration and quantizer placement (transformer preset: SmoothQuant, bias correction).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from scoring.files import OPENVINO_BIN, OPENVINO_XML


def quantize_static(fp32_onnx: Path, out_dir: Path, calibration: list[dict[str, np.ndarray]]) -> Path:
    """Write openvino_model.xml/.bin (int8) into out_dir from the unfused fp32 ONNX export."""
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    model = ov.Core().read_model(str(fp32_onnx))
    names = {i.get_any_name() for i in model.inputs}
    data = [{k: v for k, v in feed.items() if k in names} for feed in calibration]
    quantized = nncf.quantize(model, nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(data))
    out = Path(out_dir) / OPENVINO_XML
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


def convert(fp32_onnx: Path, out_dir: Path, fp16_weights: bool) -> Path:
    """Write openvino_model.xml/.bin without quantization: a wider rung of the export ladder. fp16_weights
    halves the .bin; the CPU plugin computes in its own inference precision either way."""
    import openvino as ov

    out = Path(out_dir) / OPENVINO_XML
    ov.save_model(ov.Core().read_model(str(fp32_onnx)), str(out), compress_to_fp16=fp16_weights)
    return out


def describe(fp16_weights: bool) -> str:
    return "IR with fp16 weights, not quantized" if fp16_weights else "fp32 IR, not quantized"


def remove(out_dir: Path) -> None:
    for p in (Path(out_dir) / OPENVINO_XML, Path(out_dir) / OPENVINO_BIN):
        p.unlink(missing_ok=True)
