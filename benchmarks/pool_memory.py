"""Resident memory of a pool replica process with 1, 2 and 8 domain models loaded, and cold-load time,
for each serving engine (onnxruntime, openvino).

Each count runs in a fresh process that does what a RerankerPool replica does: open the base
model, then N domain versions (VersionScorer, arena off), and answer one request of 20 passages of ~240
tokens each.

    .venv/bin/python -m benchmarks.pool_memory [--counts 1 2 8] [--engines onnxruntime openvino]
        [--version-dir DIR [DIR ...]] [--out benchmarks/results/pool_memory.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results_io import RESULTS, save


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def child(version_dir: str, n: int, engine: str) -> dict:
    from scoring.scorer import VersionScorer

    # ~240 tokens each: the buffers an engine keeps after a request grow with its shape (issue 14: 256)
    docs = [f"passage {i} about proteins, cells and the capital of France" * 20 for i in range(20)]
    before = rss_mb()
    base = VersionScorer(version_dir, threads=2, engine=engine)
    base.score("query", docs)
    with_base = rss_mb()
    models, loads = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        m = VersionScorer(version_dir, threads=2, engine=engine)
        loads.append(time.perf_counter() - t0)
        m.score("query", docs)
        models.append(m)
    assert base.engine == engine, f"{version_dir} has no {engine} model"
    return {"engine": engine, "models": n, "rss_mb_empty": before, "rss_mb_base": with_base, "rss_mb": rss_mb(),
            "per_model_mb": (rss_mb() - with_base) / n, "cold_load_s_median": sorted(loads)[len(loads) // 2]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 2, 8])
    ap.add_argument("--engines", nargs="+", default=["onnxruntime", "openvino"])
    ap.add_argument("--version-dir", nargs="+",
                    help="one or more version dirs, measured side by side in one run (e5 whole and pruned); "
                         "default: the base model (built with both engines if missing)")
    ap.add_argument("--out", type=Path, default=RESULTS / "pool_memory.json")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.child[2])))
        return
    vdirs = args.version_dir
    if not vdirs:
        from exporters.base_model import ensure_base
        from state.settings import Settings

        vdirs = [str(ensure_base(Settings(home=Path(tempfile.gettempdir()) / "reranker-bench-home", engine="openvino")))]
    rows = []
    for vdir in vdirs:
        for engine in args.engines:
            for n in args.counts:
                out = subprocess.run([sys.executable, "-m", "benchmarks.pool_memory", "--child", vdir, str(n), engine],
                                     check=True, capture_output=True, text=True).stdout
                rows.append({"version_dir": Path(vdir).name, **json.loads(out.strip().splitlines()[-1])})
                r = rows[-1]
                print(f"{Path(vdir).name}, {engine}, {n} models: RSS {r['rss_mb']:.0f} MB (base only "
                      f"{r['rss_mb_base']:.0f} MB, +{r['per_model_mb']:.0f} MB/model), cold load "
                      f"{r['cold_load_s_median'] * 1000:.0f} ms")
    save(args.out, {"version_dirs": [Path(v).name for v in vdirs], "rows": rows})


if __name__ == "__main__":
    main()
