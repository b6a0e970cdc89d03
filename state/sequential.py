"""The decision rule of a champion/challenger test, valid when looked at after every impression.

Statistics: for each metric (CTR, and MRR of the first click: 1/(rank+1), 0 without a click) the
difference challenger - champion gets an always-valid confidence sequence, the inversion of the
mixture sequential probability ratio test with a normal mixture N(0, tau^2) over the difference
(Johari, Koomen, Pekelis, Walsh 2017, "Peeking at A/B tests", KDD; eq. for the two-sample normal
case with the plug-in variance s2 = var_ch/n_ch + var_champ/n_champ of the estimated difference D):

    Lambda(theta) = sqrt(s2 / (s2 + tau^2)) * exp(tau^2 (D - theta)^2 / (2 s2 (s2 + tau^2)))

The sequence is {theta : Lambda(theta) < 1/alpha} at every look, intersected over the looks since
the minimum exposure; the always-valid p-value is min over the looks of 1/Lambda(0). Written by hand
on purpose: it is these few lines of numpy, and the Python packages that ship it (msprt, savvi,
confseq) are single-maintainer, pre-1.0 or a C++ build, and none takes two arms of unequal size.

Rule (checked in this order, each over the whole stream since the test began, so the outcome does not
depend on when anyone looked):
1. fewer than min_exposure impressions in either arm: no decision (unless the test is over its
   maximum duration: inconclusive);
2. a guardrail fails (challenger p95 latency > champion's x (1 + latency_margin), or challenger error
   rate > champion's + error_margin): reject;
3. either metric's sequence lies below 0: reject; else either lies above 0: promote. Each metric is
   tested at alpha/2 (Bonferroni), so a false promote has probability <= alpha under no effect. A
   metric whose intersected sequence is empty (its difference drifted during the test, which the
   test assumes it does not) counts for neither;
4. over the maximum impressions or duration: inconclusive; else no decision yet.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

PROMOTE, REJECT, INCONCLUSIVE, CONTINUE = "promote", "reject", "inconclusive", "continue"
METRICS = ("ctr", "mrr")


@dataclass
class ArmStream:
    """One arm's impressions in time order: ts, clicked (0/1), reciprocal rank of the first click
    (0 without one), latency in ms; and its model errors over the same time."""
    ts: np.ndarray
    clicked: np.ndarray
    rr: np.ndarray
    latency_ms: np.ndarray
    errors: int = 0

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[float, float, int | None]], errors: int = 0) -> "ArmStream":
        """rows: (ts, latency_ms, first-click rank or None)."""
        ts = np.array([r[0] for r in rows], dtype=float)
        first = [r[2] for r in rows]
        return cls(ts=ts, clicked=np.array([p is not None for p in first], dtype=float),
                   rr=np.array([0.0 if p is None else 1.0 / (p + 1) for p in first]),
                   latency_ms=np.array([r[1] for r in rows], dtype=float), errors=errors)

    @property
    def n(self) -> int:
        return len(self.ts)

    def summary(self) -> dict[str, Any]:
        n = self.n
        return {"impressions": n, "clicks": int(self.clicked.sum()),
                "ctr": float(self.clicked.mean()) if n else None, "mrr": float(self.rr.mean()) if n else None,
                "latency_ms_p95": float(np.percentile(self.latency_ms, 95)) if n else None,
                "errors": self.errors, "error_rate": self.errors / (n + self.errors) if n + self.errors else None}


def _running(values: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the mean (values' sample variance / n) after each of `counts` values."""
    c1 = np.concatenate([[0.0], np.cumsum(values)])[counts]
    c2 = np.concatenate([[0.0], np.cumsum(values * values)])[counts]
    n = counts.astype(float)
    mean = c1 / n
    var = np.maximum(c2 / n - mean * mean, 0.0) * n / np.maximum(n - 1, 1)
    return mean, var / n


def confidence_sequence(d: np.ndarray, s2: np.ndarray, tau: float, alpha: float) -> dict[str, Any]:
    """The mSPRT confidence sequence over looks with estimates `d` and their variances `s2`:
    the running intersection [lo, hi] and the always-valid p-value of "no difference", at the last look.
    Looks with s2 == 0 (no variation yet) carry no evidence and are skipped."""
    ok = s2 > 0
    d, s2 = d[ok], s2[ok]
    if not len(d):
        return {"diff": None, "cs": None, "p_value": 1.0}
    t2 = tau * tau
    # Lambda(theta) < 1/alpha  <=>  |d - theta| < half (solved for theta)
    half = np.sqrt(2 * s2 * (s2 + t2) / t2 * (np.log(1 / alpha) + 0.5 * np.log((s2 + t2) / s2)))
    log_lambda0 = 0.5 * np.log(s2 / (s2 + t2)) + t2 * d * d / (2 * s2 * (s2 + t2))
    p = float(min(1.0, math.exp(-float(np.max(log_lambda0)))))
    return {"diff": float(d[-1]), "cs": [float(np.max(d - half)), float(np.min(d + half))], "p_value": p}


@dataclass
class DecisionRule:
    alpha: float = 0.05
    tau: float = 0.03
    min_exposure: int = 300
    max_impressions: int = 50_000
    max_duration_s: float = 14 * 86400
    latency_margin: float = 0.25
    error_margin: float = 0.01

    @classmethod
    def from_settings(cls, s: Any) -> "DecisionRule":
        return cls(alpha=s.decision_alpha, tau=s.decision_tau, min_exposure=s.decision_min_exposure,
                   max_impressions=s.decision_max_impressions, max_duration_s=s.decision_max_duration_s,
                   latency_margin=s.guardrail_latency_margin, error_margin=s.guardrail_error_margin)

    def metric_sequences(self, champ: ArmStream, ch: ArmStream) -> dict[str, dict[str, Any]]:
        """Per metric, the confidence sequence of challenger - champion over every look (one look per
        impression of either arm) from the first with min_exposure impressions in both arms."""
        ts = np.concatenate([champ.ts, ch.ts])
        is_ch = np.concatenate([np.zeros(champ.n, bool), np.ones(ch.n, bool)])
        order = np.argsort(ts, kind="stable")
        n_ch = np.cumsum(is_ch[order])
        n_champ = np.arange(1, len(order) + 1) - n_ch
        look = (n_ch >= self.min_exposure) & (n_champ >= self.min_exposure)
        out = {}
        for metric, a, b in (("ctr", champ.clicked, ch.clicked), ("mrr", champ.rr, ch.rr)):
            if not look.any():
                out[metric] = {"diff": None, "cs": None, "p_value": 1.0}
                continue
            m0, v0 = _running(a, n_champ[look])
            m1, v1 = _running(b, n_ch[look])
            out[metric] = confidence_sequence(m1 - m0, v0 + v1, self.tau, self.alpha / len(METRICS))
        return out

    def guardrails(self, champ: ArmStream, ch: ArmStream) -> list[dict[str, Any]]:
        a, b = champ.summary(), ch.summary()
        lat_limit = a["latency_ms_p95"] * (1 + self.latency_margin)
        err_limit = (a["error_rate"] or 0.0) + self.error_margin
        return [{"guardrail": "latency_ms_p95", "champion": a["latency_ms_p95"], "challenger": b["latency_ms_p95"],
                 "limit": lat_limit, "passed": b["latency_ms_p95"] <= lat_limit},
                {"guardrail": "error_rate", "champion": a["error_rate"] or 0.0, "challenger": b["error_rate"] or 0.0,
                 "limit": err_limit, "passed": (b["error_rate"] or 0.0) <= err_limit}]

    def decide(self, champ: ArmStream, ch: ArmStream, elapsed_s: float) -> dict[str, Any]:
        """{outcome, reasons, stats}: outcome is promote / reject / inconclusive, or continue (no decision yet)."""
        over = []
        if ch.n >= self.max_impressions:
            over.append(f"the challenger reached the maximum of {self.max_impressions} impressions")
        if elapsed_s >= self.max_duration_s:
            over.append(f"the test ran for its maximum of {self.max_duration_s:g} s")
        stats: dict[str, Any] = {"arms": {"champion": champ.summary(), "challenger": ch.summary()},
                                 "elapsed_s": elapsed_s, "rule": self.__dict__.copy()}
        if min(champ.n, ch.n) < self.min_exposure:
            reasons = [f"{min(champ.n, ch.n)} impressions in the smaller arm, {self.min_exposure} needed"]
            return {"outcome": INCONCLUSIVE if over else CONTINUE, "reasons": over + reasons, "stats": stats}
        stats["guardrails"] = guards = self.guardrails(champ, ch)
        stats["metrics"] = seqs = self.metric_sequences(champ, ch)
        failed = [g for g in guards if not g["passed"]]
        if failed:
            return {"outcome": REJECT, "stats": stats, "reasons": [
                f"guardrail {g['guardrail']}: challenger {g['challenger']:.4g} over the limit {g['limit']:.4g} "
                f"(champion {g['champion']:.4g})" for g in failed]}
        # an empty intersection (lo > hi) means the difference itself moved during the test: no evidence
        # either way from that metric (the sequence assumes one fixed difference)
        drifted = [m for m in METRICS if seqs[m]["cs"] and seqs[m]["cs"][0] > seqs[m]["cs"][1]]
        worse = [m for m in METRICS if seqs[m]["cs"] and m not in drifted and seqs[m]["cs"][1] < 0]
        better = [m for m in METRICS if seqs[m]["cs"] and m not in drifted and seqs[m]["cs"][0] > 0]

        def said(m: str, word: str) -> str:
            lo, hi = seqs[m]["cs"]
            return (f"{m.upper()} {word}: challenger - champion {seqs[m]['diff']:+.4f}, always-valid "
                    f"{1 - self.alpha / len(METRICS):.1%} interval [{lo:+.4f}, {hi:+.4f}]")

        if worse:
            return {"outcome": REJECT, "stats": stats, "reasons": [said(m, "worse") for m in worse]}
        if better:
            return {"outcome": PROMOTE, "stats": stats, "reasons": [said(m, "better") for m in better]}
        moved = [f"{m.upper()}: the always-valid interval is empty, the difference changed during the test"
                 for m in drifted]
        return {"outcome": INCONCLUSIVE if over else CONTINUE, "stats": stats,
                "reasons": over + moved or ["no metric differs yet at the always-valid level"]}
