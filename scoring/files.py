"""The file names of a published version directory (docs: README "Models on disk")."""
from __future__ import annotations

from typing import Literal

# onnxruntime; every version has it. Dynamic int8, or fp16/fp32 when every int8 recipe lost parity (the
# export ladder: the manifest's `precision` says which); inputs int64 and output fp32 at every rung
MODEL_ONNX = "model.onnx"
OPENVINO_XML = "openvino_model.xml"  # OpenVINO, when it passed parity: static int8, or the IR at the rung's format
OPENVINO_BIN = "openvino_model.bin"
OPENVINO_PRECISION = "openvino_inference_precision"  # manifest key: the CPU plugin's precision it was checked at
TOKENIZER = "tokenizer.json"
CONFIG = "config.json"
MANIFEST = "manifest.json"  # kind, metrics, sha256 of every other file
# a hybrid domain model (scoring/lexical.py, scoring/fusion.py): the domain's term statistics and the
# fusion weights; a version ships both or neither
LEXICAL_STATS = "lexical.json.gz"
FUSION = "fusion.json"
# a version whose embedding table keeps only its domain's pieces (exporters/vocabulary.py): the tokenizer's
# id -> the table's row (unseen pieces -> <unk>'s row), int32, applied by the scorer before inference
VOCAB_MAP = "vocab_map.npy"

REQUIRED = (MODEL_ONNX, TOKENIZER, MANIFEST)  # what a version must ship to be published

Engine = Literal["onnxruntime", "openvino"]
