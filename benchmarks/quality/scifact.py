"""Quality benchmark: fine-tune on all of SciFact train (20% of it held out as the gate's dev split),
then `reranker evaluate` on test. Writes benchmarks/results/quality_scifact.json and a PNG plot.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.quality.scifact [--home /tmp/bench_home] [--k 30]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def cli(args: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env, text=True,
                         stdout=subprocess.PIPE)
    if out.returncode not in (0, 2):
        raise SystemExit(f"reranker {' '.join(args)} failed with {out.returncode}")
    return json.loads(out.stdout)


def from_manifest(home: Path) -> dict:
    """The train part of a result, from the active version's manifest (what the job recorded)."""
    from state.ids import model_id
    from state.registry import Registry

    reg = Registry(home / "models")
    version = reg.active_version("scifact")
    if not version:
        raise SystemExit(f"no active scifact model in {home}")
    man = reg.manifest("scifact", version)
    return {"published": True, "version": version, "model_id": model_id("scifact", version), "metrics": man["evaluation"],
            "gates": man["gates"], "sources": man["trained_from"]["sources"], "openvino": man.get("openvino"),
            "quantization": man.get("quantization")}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = result["test"]["systems"]
    metrics = ["ndcg@5", "ndcg@10", "mrr@10", "map@10"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(systems)
    for i, (name, res) in enumerate(systems.items()):
        label = f"{name} ({res['model']})" if "model" in res else name
        ax.bar([m + i * width for m in range(len(metrics))], [res[m] for m in metrics], width, label=label)
    ax.set_xticks([m + width * (len(systems) - 1) / 2 for m in range(len(metrics))], metrics)
    ax.set_ylim(0, 1)
    ax.set_title(f"SciFact test, BM25 top-{result['test']['k']} reranked ({result['test']['queries']} queries)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--beir", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    p.add_argument("--home", default=str(ROOT / "var" / "quality-scifact"), help="RERANKER_HOME of the run")
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--config", default="{}", help="training options as JSON")
    p.add_argument("--evaluate-only", action="store_true",
                   help="skip training: evaluate the active scifact model of --home (its manifest gives the train part)")
    a = p.parse_args()
    env = {**os.environ, "RERANKER_HOME": a.home, "HF_HUB_OFFLINE": "1"}
    from benchmarks.latency import machine

    if a.evaluate_only:
        train, train_s = from_manifest(Path(a.home)), None
    else:
        t0 = time.time()
        train = cli(["train", "--domain", "scifact", "--beir", a.beir, "--split", "train", "--activate", "--json",
                     "--config", a.config], env)
        train_s = round(time.time() - t0, 1)
    result = {"dataset": "scifact", "machine": machine(), "train": train, "train_wall_seconds": train_s}
    if train.get("published"):
        result["test"] = cli(["evaluate", "--domain", "scifact", "--beir", a.beir, "--split", "test",
                              "--k", str(a.k), "--json"], env)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quality_scifact.json").write_text(json.dumps(result, indent=2))
    if "test" in result:
        plot(result, RESULTS / "quality_scifact.png")
    print(json.dumps({k: v for k, v in result.items() if k != "train"}, indent=2))


if __name__ == "__main__":
    main()
