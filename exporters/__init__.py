"""Sentence-transformers model directory -> ONNX int8 version directory, with parity/latency/size checks."""
