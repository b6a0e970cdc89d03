"""Fitting the domain model's fusion weight (scoring/fusion.py) on queries the neural model never saw."""
from __future__ import annotations

import numpy as np

from scoring.fusion import fused_raw
from training.metrics import score_run

GRID = tuple(round(w, 2) for w in np.arange(0.0, 1.0001, 0.05))


def fuse_runs(neural: dict[str, dict[str, float]], lexical: dict[str, dict[str, float]],
              w: float) -> dict[str, dict[str, float]]:
    """Per query: (1 - w) z(neural) + w z(lexical) over its candidates, as served."""
    out = {}
    for q, scores in neural.items():
        ids = list(scores)
        if len(ids) < 2:  # serving does not fuse fewer than two documents
            out[q] = dict(scores)
            continue
        fused = fused_raw(np.array([scores[d] for d in ids]), np.array([lexical[q][d] for d in ids]), (1 - w, w))
        out[q] = dict(zip(ids, fused.tolist()))
    return out


def fit_lexical_weight(neural: dict[str, dict[str, float]], lexical: dict[str, dict[str, float]],
                       qrels: dict[str, dict[str, int]], grid: tuple[float, ...] = GRID) -> tuple[float, dict]:
    """(w with the best mean NDCG@10, {w: NDCG@10}); ties go to the weight nearest 0.5 (an even mix)."""
    table = {w: score_run(qrels, fuse_runs(neural, lexical, w), 10)["ndcg@10"] for w in grid}
    best = max(grid, key=lambda w: (table[w], -abs(w - 0.5)))
    return best, {f"{w:.2f}": v for w, v in table.items()}
