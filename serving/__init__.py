"""The Ray Serve application: routes, wire models, A/B assignment, the model pool and the ONNX runtime."""
