"""What a latency figure depends on besides the code, so that a figure from one machine can be checked on
another: the CPU and its ISA, the host (hypervisor, steal time, CPU quota and affinity), and what each
engine actually runs (OpenVINO: its optimization capabilities, the compiled model's precision, threads and
the kernels it picked per layer with their runtime precision; torch: its CPU capability and threads)."""
from __future__ import annotations

import os
import platform
from collections import Counter
from pathlib import Path
from typing import Any

ISA = ("avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
       "amx_tile", "amx_int8", "amx_bf16", "hypervisor")


def _cpuinfo(key: str) -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(key):
            return line.split(":", 1)[1].strip()
    return "?"


def cpu_times() -> dict[str, int]:
    """Jiffies of the whole machine (/proc/stat): steal is time the hypervisor gave to another guest."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    return dict(zip(names, map(int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])))


def busy_shares(start: dict[str, int], end: dict[str, int]) -> dict[str, float]:
    """Shares of the machine's CPU time between two cpu_times(): steal and everything not idle."""
    d = {k: end[k] - start[k] for k in start}
    total = max(1, sum(d.values()))
    return {"steal": round(d["steal"] / total, 4), "busy": round(1 - (d["idle"] + d["iowait"]) / total, 4)}


def host() -> dict[str, Any]:
    flags = set(_cpuinfo("flags").split())
    quota = Path("/sys/fs/cgroup/cpu.max")
    return {"cpu": _cpuinfo("model name"), "family_model_stepping": [_cpuinfo(k) for k in ("cpu family", "model\t",
                                                                                         "stepping")],
            "microcode": _cpuinfo("microcode"), "mhz": _cpuinfo("cpu MHz"), "cores": os.cpu_count(),
            "affinity": sorted(os.sched_getaffinity(0)), "cgroup_cpu_max": quota.read_text().strip()
            if quota.is_file() else None, "platform": platform.platform(),
            "isa": [f for f in ISA if f in flags], "loadavg_start": os.getloadavg(),
            "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OV_CPU_THREADS")
                           if k in os.environ}}


def torch_info() -> dict[str, Any]:
    import torch

    return {"version": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "mkldnn": torch.backends.mkldnn.is_available()}


def openvino_info(compiled: Any) -> dict[str, Any]:
    """The CPU plugin's capabilities and, for one compiled model, its settings and the kernels it ran:
    counts of "layer primitive runtime-precision" (call it after an inference: with dynamic shapes the
    primitives are picked on the first one, "undef" before)."""
    import openvino as ov

    core = ov.Core()
    props = {}
    for name in ("INFERENCE_PRECISION_HINT", "EXECUTION_DEVICES", "INFERENCE_NUM_THREADS", "NUM_STREAMS",
                 "PERFORMANCE_HINT", "ENABLE_CPU_PINNING", "ENABLE_HYPER_THREADING", "SCHEDULING_CORE_TYPE",
                 "CPU_DENORMALS_OPTIMIZATION", "EXECUTION_MODE_HINT"):
        try:
            props[name] = str(compiled.get_property(name))
        except Exception as e:  # noqa: BLE001 - a property this version does not have
            props[name] = f"n/a ({type(e).__name__})"
    kernels: Counter = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        layer, primitive, precision = (rt[k].astype(str) for k in ("layerType", "primitiveType", "runtimePrecision"))
        if layer not in ("Const", "Input", "Output"):
            kernels[f"{layer} {primitive} {precision}"] += 1
    return {"version": ov.__version__, "optimization_capabilities": core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"),
            "device": core.get_property("CPU", "FULL_DEVICE_NAME"), "compiled": props,
            "kernels": dict(kernels.most_common())}
