"""Ranking metrics with ranx, on the same first-stage candidates for every system."""
from __future__ import annotations

from ranx import Qrels, Run, evaluate

# context precision@k (RAGAS' name) is precision@k over the reranked contexts.
def metric_names(k: int) -> list[str]:
    return ["ndcg@5", "ndcg@10", "mrr@10", "map@10", f"recall@{k}", "precision@5"]


def rename(name: str) -> str:
    return "context_precision@5" if name == "precision@5" else name


def score_run(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], k: int) -> dict[str, float]:
    """Metrics averaged over the queries in qrels; a query with no candidates scores 0."""
    run = {q: (run.get(q) or {"__none__": 0.0}) for q in qrels}
    res = evaluate(Qrels(qrels), Run(run), metric_names(k), make_comparable=True)
    return {rename(m): round(float(v), 4) for m, v in res.items()}
