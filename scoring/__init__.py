"""The torch-free scoring leaf: load one published version directory and score (query, passages).

tokenizers + numpy + onnxruntime or OpenVINO only. Serving, exporters, training and the CLI use it;
it imports nothing of theirs (nor state).
"""
