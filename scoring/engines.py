"""Inference engines behind one call: feed (name -> int64 array) in, first output out."""
from __future__ import annotations

import ctypes
import threading
import weakref
from collections import OrderedDict
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


def int8_embedding_lookup(model, min_bytes: int = 4 << 20) -> int:
    """Gather rows of an int8 embedding table first and dequantize the rows, instead of the table.

    The exported IR holds the word embeddings as int8 -> Convert -> Multiply(per-row scale) -> Gather;
    OpenVINO's CPU plugin constant-folds the dequantization at compile time, so every loaded model kept a
    fp32 copy of the table (30522 x 384 x 4 = 47 MB, measured: compile took 72 MB per model, 24 MB
    after this). Gathering the int8 rows and their scales gives the same numbers (per-row scales: the
    product is elementwise). No OpenVINO pass does this for a statically quantized model's Gather
    (the compressed-Gather support is for weight-compressed LLM IRs), hence by hand. Returns how many
    Gathers it rewrote."""
    import openvino as ov
    import openvino.opset13 as ops

    done = 0
    for gather in list(model.get_ordered_ops()):
        if gather.get_type_name() != "Gather":
            continue
        mul = gather.input(0).get_source_output().get_node()
        if mul.get_type_name() != "Multiply":
            continue
        a, b = (i.get_source_output().get_node() for i in mul.inputs())
        convert, scale = (a, b) if a.get_type_name() == "Convert" else (b, a)
        table = convert.input(0).get_source_output().get_node() if convert.get_type_name() == "Convert" else None
        if (table is None or table.get_type_name() != "Constant" or scale.get_type_name() != "Constant"
                or table.get_byte_size() < min_bytes or table.get_element_type() not in (ov.Type.i8, ov.Type.u8)):
            continue
        table_shape, scale_shape = list(table.get_output_shape(0)), list(scale.get_output_shape(0))
        axis = gather.input(2).get_source_output().get_node()
        # only the shape whose row gather commutes with the product: a [rows, dim] table, [rows, 1] scales
        if (len(table_shape) != 2 or scale_shape != [table_shape[0], 1] or axis.get_type_name() != "Constant"
                or int(np.asarray(axis.get_data()).reshape(-1)[0]) != 0):
            continue
        ids, axis_out = gather.input(1).get_source_output(), gather.input(2).get_source_output()
        rows = ops.convert(ops.gather(table.output(0), ids, axis_out), convert.get_output_element_type(0))
        rebuilt = ops.multiply(rows, ops.gather(scale.output(0), ids, axis_out))
        for target in gather.output(0).get_target_inputs():
            target.replace_source_output(rebuilt.output(0))
        done += 1
    if done:
        model.validate_nodes_and_infer_types()
    return done


# OpenVINO keeps a compiled model's intermediate buffers after a request (measured: 26 MB at 20 x 80
# tokens, 55 MB at 16 x 256), so an LRU of 20 models would hold 20 sets. Only the most recently used
# engines of this process keep theirs; the others release them once idle (the next request on such a
# model allocates again: ~7% of that request's time, measured).
KEEP_WARM = 2
_warm_lock = threading.Lock()
_warm: OrderedDict[int, weakref.ref] = OrderedDict()  # least recently used first


class OpenVinoEngine:
    """precision: the CPU plugin's inference precision ("f32", "bf16"...); None: the plugin's default
    (bf16 where the CPU has it). A version pins it when its parity was checked at it (exporters/build.py:
    the fp32 rung of the export ladder)."""

    def __init__(self, path: Path, threads: int, precision: str | None = None):
        import openvino as ov  # imported only where this engine is used

        core = ov.Core()
        model = core.read_model(str(path))
        int8_embedding_lookup(model)
        # No CPU pinning: every pool replica is its own process and each pinned its threads to the same
        # first cores (two 1-thread replicas on 2 cores: 87 pairs/s pinned, 129 unpinned, measured);
        # within one process pinning gained nothing measurable (169/155 vs 166/150 pairs/s).
        self.compiled = core.compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False,
            **({"INFERENCE_PRECISION_HINT": precision} if precision else {})})
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type: "bf16", "f32"...
        self.precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.output = self.compiled.outputs[0]
        self._busy = 0  # calls in flight (under _warm_lock): memory is released only when idle

    def __call__(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        with _warm_lock:
            self._busy += 1
            _warm.pop(id(self), None)
            _warm[id(self)] = weakref.ref(self)
        try:
            # an infer request is not thread-safe and the pool scores from several threads: one per call
            return self.compiled.create_infer_request().infer(feed)[self.output]
        finally:
            with _warm_lock:
                self._busy -= 1
                _release_cold()


def _release_cold() -> None:
    """Under _warm_lock: release the buffers of idle engines beyond the KEEP_WARM most recent."""
    released = False
    for key in list(_warm)[:max(0, len(_warm) - KEEP_WARM)]:
        engine = _warm[key]()
        if engine is None:
            del _warm[key]
        elif not engine._busy:
            engine.compiled.release_memory()
            del _warm[key]
            released = True
    if released:
        _return_to_os()


def _return_to_os() -> None:
    """glibc keeps freed buffers in its heap (measured: 68 MB over 6 models); hand them back."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only; elsewhere nothing to do
    if trim is not None:
        trim(0)
