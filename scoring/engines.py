"""Inference engines behind one call: feed (name -> int64 array) in, first output out."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


class OnnxRuntimeEngine:
    def __init__(self, path: Path, threads: int):
        opts = ort.SessionOptions()
        # onnxruntime ignores OMP_NUM_THREADS and would spin a pool per session: pin it.
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # The arena kept ~360 MB per model after a request (DESIGN.md); off keeps the LRU pool bounded.
        opts.enable_cpu_mem_arena = False
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, feed)[0]


class OpenVinoEngine:
    def __init__(self, path: Path, threads: int):
        import openvino as ov  # imported only where this engine is used

        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.output = self.compiled.outputs[0]

    def __call__(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        # an infer request is not thread-safe and the pool scores from several threads: one per call
        return self.compiled.create_infer_request().infer(feed)[self.output]
