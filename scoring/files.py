"""The file names of a published version directory (docs: README "Models on disk")."""
from __future__ import annotations

from typing import Literal

MODEL_ONNX = "model.onnx"  # dynamic int8, onnxruntime; every version has it
OPENVINO_XML = "openvino_model.xml"  # static int8 for OpenVINO, when it passed parity
OPENVINO_BIN = "openvino_model.bin"
TOKENIZER = "tokenizer.json"
CONFIG = "config.json"
MANIFEST = "manifest.json"  # kind, metrics, sha256 of every other file
# a hybrid domain model (scoring/lexical.py, scoring/fusion.py): the domain's term statistics and the
# fusion weights; a version ships both or neither
LEXICAL_STATS = "lexical.json.gz"
FUSION = "fusion.json"

REQUIRED = (MODEL_ONNX, TOKENIZER, MANIFEST)  # what a version must ship to be published

Engine = Literal["onnxruntime", "openvino"]
