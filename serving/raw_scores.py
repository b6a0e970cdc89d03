"""TEI's `raw_scores`: a model's score before its activation, recovered from the served 0..1 score.

The pool serves scores after the activation the version's manifest names (scoring/scorer.py):
cross-encoders `sigmoid(logit)` (or the logit itself with activation "identity"), bi-encoders
`(cosine + 1) / 2`; a fused score (a hybrid version, or the base with request-local BM25: meta.fused)
is `sigmoid(z-sum)`, whose raw score is the z-sum. Inverting here keeps the scorer's one output. The served scores are float32,
so the recovered logit loses precision as it grows (about +-0.01 at 12) and a sigmoid saturates at 1.0
for logits above ~16.6: those come back as 16.6.
"""
from __future__ import annotations

from typing import Any

import numpy as np

_F32_BELOW_ONE = float(np.nextafter(np.float32(1), np.float32(0)))
_F32_TINY = float(np.finfo(np.float32).smallest_subnormal)


def raw_scores(scores: np.ndarray | list[float], manifest: dict[str, Any], fused: bool = False) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if fused:
        return _logit(s)  # the z-sum (scoring/fusion.py)
    if manifest.get("kind") == "bi-encoder":
        return 2.0 * s - 1.0  # the cosine
    if manifest.get("activation", "sigmoid") == "sigmoid":
        return _logit(s)
    return s  # "identity": the served score is the logit


def _logit(s: np.ndarray) -> np.ndarray:
    s = np.clip(s, _F32_TINY, _F32_BELOW_ONE)
    return np.log(s) - np.log1p(-s)
