"""The champion/challenger decision rule (state/sequential.py) on synthetic click streams.

`python -m benchmarks.decision_rule [--seeds 200]`: false promotes under no effect when the rule looks
after every impression (and, for contrast, a fixed-horizon z-test peeked at every 100 impressions),
power and impressions per arm until the decision for a few CTR lifts. Streams: Bernoulli clicks at the
arm's CTR, the first click's rank drawn from RANKS. Writes benchmarks/results/decision_rule.json.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import norm

from benchmarks.results_io import RESULTS, save
from state.sequential import ArmStream, DecisionRule

RANKS = np.array([0.45, 0.2, 0.15, 0.1, 0.1])  # where the first click lands, when there is one


def stream(rng: np.random.Generator, n: int, ctr: float, latency: float = 10.0, errors: int = 0,
           ranks: np.ndarray = RANKS) -> ArmStream:
    clicked = rng.random(n) < ctr
    rank = rng.choice(len(ranks), size=n, p=ranks)
    return ArmStream(ts=np.sort(rng.random(n) * 1000), clicked=clicked.astype(float),
                     rr=np.where(clicked, 1.0 / (rank + 1), 0.0), latency_ms=rng.gamma(8, latency / 8, n),
                     errors=errors)


def prefix(s: ArmStream, n: int) -> ArmStream:
    """The first n impressions (a stream's ts are sorted)."""
    return ArmStream(ts=s.ts[:n], clicked=s.clicked[:n], rr=s.rr[:n], latency_ms=s.latency_ms[:n], errors=s.errors)


def naive_peeking_promotes(a: ArmStream, b: ArmStream, start: int, every: int = 100) -> bool:
    """A two-proportion z-test at 0.05 looked at every `every` impressions, stopped at the first win."""
    for n in range(start, min(a.n, b.n) + 1, every):
        pa, pb = a.clicked[:n].mean(), b.clicked[:n].mean()
        se = np.sqrt((pa * (1 - pa) + pb * (1 - pb)) / n)
        if se > 0 and (pb - pa) / se > norm.ppf(0.975):
            return True
    return False


def impressions_to_decision(rule: DecisionRule, a: ArmStream, b: ArmStream) -> int | None:
    """Impressions per arm at the first promote or reject. The intersected sequences only narrow, so
    a metric's decision, once reached, stays: bisection finds its first look."""
    if rule.decide(a, b, 0)["outcome"] not in ("promote", "reject"):
        return None
    lo, hi = rule.min_exposure, min(a.n, b.n)
    while lo < hi:
        mid = (lo + hi) // 2
        if rule.decide(prefix(a, mid), prefix(b, mid), 0)["outcome"] in ("promote", "reject"):
            hi = mid
        else:
            lo = mid + 1
    return lo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--impressions", type=int, default=4000, help="per arm and run")
    ap.add_argument("--ctr", type=float, default=0.30, help="the champion's CTR")
    args = ap.parse_args()
    rule = DecisionRule(min_exposure=200)
    t0 = time.time()
    out = {"rule": rule.__dict__.copy(), "seeds": args.seeds, "impressions_per_arm": args.impressions,
           "champion_ctr": args.ctr, "ranks": RANKS.tolist(), "lifts": {}}
    for lift in (0.0, 0.02, 0.03, 0.05, -0.05):
        outcomes, naive, when = {"promote": 0, "reject": 0, "continue": 0, "inconclusive": 0}, 0, []
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            a, b = stream(rng, args.impressions, args.ctr), stream(rng, args.impressions, args.ctr + lift)
            outcomes[rule.decide(a, b, 0)["outcome"]] += 1
            naive += naive_peeking_promotes(a, b, rule.min_exposure)
            if lift:
                n = impressions_to_decision(rule, a, b)
                if n is not None:
                    when.append(n)
        row = {"outcomes": outcomes, "naive_peeking_promotes": naive,
               "impressions_to_decision_median": float(np.median(when)) if when else None,
               "impressions_to_decision_p90": float(np.percentile(when, 90)) if when else None}
        out["lifts"][f"{lift:+.2f}"] = row
        print(f"CTR {args.ctr:.2f} -> {args.ctr + lift:.2f}: {outcomes}; naive peeking promotes {naive}; "
              f"impressions per arm to decide: median {row['impressions_to_decision_median']}, "
              f"p90 {row['impressions_to_decision_p90']}")
    out["seconds"] = round(time.time() - t0, 1)
    save(RESULTS / "decision_rule.json", out)


if __name__ == "__main__":
    main()
