"""The A/B report of a domain: which arm (base or domain model) gets clicked more. A challenger's
impressions have their own arm (state/challenge.py decides between champion and challenger).

Per arm: impressions, clicked impressions ("clicks"), CTR = clicked impressions / impressions,
MRR of the first click (1/(rank+1) of the highest-ranked clicked passage, 0 without a click),
mean and p95 latency.

Each arm's CTR has a 95% Wilson score interval (scipy's binomtest) and its MRR a 95% normal
interval of the mean reciprocal rank (the mean of n independent per-impression values; None below
two impressions). The timeline counts impressions and clicked impressions per arm per time bucket.

Comparison: CTR(domain) - CTR(base) with a 95% Wald confidence interval (unpooled standard
error) and the two-sided p-value of the two-proportion z-test (pooled standard error).

Verdict thresholds (documented, deliberately conservative):
- `insufficient data`: an arm has fewer than MIN_IMPRESSIONS_PER_ARM impressions, or both arms
  together have fewer than MIN_CLICKS clicked impressions: the z-test is unreliable there;
- `no difference`: p-value >= ALPHA;
- `domain better` / `base better`: p-value < ALPHA, by the sign of the CTR difference.

Incomplete figures: impressions spilled during a database outage and not replayed yet are missing from
the store; the report says so (`incomplete`, `events_backlog`: those of this domain). Nothing should
decide on the figures while they are incomplete (state.spill.backlog() is the check).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest, norm

from state import spill
from state.store import Store

ARMS = ("base", "domain", "challenger")  # the verdict compares base and domain (the champion)
MIN_IMPRESSIONS_PER_ARM = 100
MIN_CLICKS = 10
ALPHA = 0.05
MAX_BUCKETS = 1000


def arm_summary(rows: list[tuple[str, str, float, int | None]]) -> dict[str, Any]:
    lat = np.array([r[2] for r in rows], dtype=float)
    first = [r[3] for r in rows]
    n = len(rows)
    clicks = sum(1 for p in first if p is not None)
    models: dict[str, int] = {}
    for r in rows:
        models[r[1]] = models.get(r[1], 0) + 1
    rr = np.array([0.0 if p is None else 1.0 / (p + 1) for p in first])
    return {
        "impressions": n,
        "clicks": clicks,
        "ctr": clicks / n if n else None,
        "ctr_ci95": _wilson(clicks, n),
        "mrr": float(rr.mean()) if n else None,
        "mrr_ci95": _mean_ci(rr),
        "latency_ms_mean": float(lat.mean()) if n else None,
        "latency_ms_p95": float(np.percentile(lat, 95)) if n else None,
        "models": models,
    }


def _wilson(k: int, n: int) -> list[float] | None:
    if not n:
        return None
    ci = binomtest(k, n).proportion_ci(confidence_level=1 - ALPHA, method="wilson")
    return [float(ci.low), float(ci.high)]


def _mean_ci(values: np.ndarray) -> list[float] | None:
    if len(values) < 2:
        return None
    half = norm.ppf(1 - ALPHA / 2) * values.std(ddof=1) / math.sqrt(len(values))
    m = float(values.mean())
    return [max(0.0, m - half), min(1.0, m + half)]


def compare(base: dict[str, Any], domain: dict[str, Any], alpha: float = ALPHA) -> dict[str, Any]:
    n1, c1, n2, c2 = base["impressions"], base["clicks"], domain["impressions"], domain["clicks"]
    out: dict[str, Any] = {"ctr_diff": None, "ci95": None, "p_value": None, "z": None}
    if n1 and n2:
        p1, p2 = c1 / n1, c2 / n2
        diff = p2 - p1
        se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
        zc = norm.ppf(1 - alpha / 2)
        pooled = (c1 + c2) / (n1 + n2)
        se0 = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        if se0 > 0:
            z = diff / se0
            p = float(2 * norm.sf(abs(z)))
        else:  # no clicks at all, or clicks on every impression: the arms are identical
            z, p = 0.0, 1.0
        out.update(ctr_diff=diff, ci95=[diff - zc * se, diff + zc * se], p_value=p, z=z)
    if min(n1, n2) < MIN_IMPRESSIONS_PER_ARM or c1 + c2 < MIN_CLICKS:
        verdict = "insufficient data"
    elif out["p_value"] >= alpha:
        verdict = "no difference"
    else:
        verdict = "domain better" if out["ctr_diff"] > 0 else "base better"
    out["verdict"] = verdict
    return out


def ab_report(store: Store, domain: str, since: float | None = None,
              spill_path: Path | None = None) -> dict[str, Any]:
    """`spill_path`: the spill file (settings.spill_path) whose backlog makes the figures incomplete."""
    backlog = spill.backlog(spill_path, domain) if spill_path is not None else 0
    rows = store.arm_rows(domain, since=since)
    arms = {arm: arm_summary([r for r in rows if r[0] == arm]) for arm in ARMS}
    if not arms["challenger"]["impressions"]:
        del arms["challenger"]  # a domain that never had a challenger reports as before
    cmp = compare(arms["base"], arms["domain"])
    return {
        "domain": domain,
        "since": since,
        "arms": arms,
        "comparison": {k: v for k, v in cmp.items() if k != "verdict"},
        "verdict": cmp["verdict"],
        "thresholds": {"min_impressions_per_arm": MIN_IMPRESSIONS_PER_ARM, "min_clicks": MIN_CLICKS,
                       "alpha": ALPHA},
        "incomplete": backlog > 0,
        "events_backlog": backlog,
    }


def ab_timeline(store: Store, domain: str, since: float, until: float, bucket_s: float) -> dict[str, Any]:
    """Impressions and clicked impressions per arm in buckets of `bucket_s` seconds from `since`."""
    if bucket_s <= 0 or until <= since:
        raise ValueError("needs bucket_s > 0 and until > since")
    n = math.ceil((until - since) / bucket_s)
    if n > MAX_BUCKETS:
        raise ValueError(f"{n} buckets asked for; at most {MAX_BUCKETS}: widen bucket_s or shorten the range")
    buckets = [{"start": since + i * bucket_s, **{arm: {"impressions": 0, "clicks": 0} for arm in ARMS}}
               for i in range(n)]
    for ts, variant, clicked in store.arm_events(domain, since, until):
        if variant in ARMS:
            b = buckets[min(n - 1, int((ts - since) // bucket_s))][variant]
            b["impressions"] += 1
            b["clicks"] += int(clicked)
    return {"domain": domain, "since": since, "until": until, "bucket_s": bucket_s, "buckets": buckets}


def format_report(r: dict[str, Any]) -> str:
    def f(v, spec=".3f"):
        return "-" if v is None else format(v, spec)
    lines = [f"A/B report for domain {r['domain']!r}",
             f"{'arm':8} {'impr':>7} {'clicks':>7} {'CTR':>7} {'MRR':>7} {'lat mean':>9} {'lat p95':>9}  models"]
    for arm, a in r["arms"].items():
        lines.append(f"{arm:8} {a['impressions']:>7} {a['clicks']:>7} {f(a['ctr']):>7} {f(a['mrr']):>7} "
                     f"{f(a['latency_ms_mean'], '.1f'):>9} {f(a['latency_ms_p95'], '.1f'):>9}  "
                     + ", ".join(f"{m}:{n}" for m, n in a["models"].items()))
    c = r["comparison"]
    ci = "-" if c["ci95"] is None else f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]"
    lines.append(f"CTR domain - base: {f(c['ctr_diff'], '+.3f')}  95% CI {ci}  p = {f(c['p_value'], '.4g')}")
    t = r["thresholds"]
    lines.append(f"verdict: {r['verdict']}  (needs >= {t['min_impressions_per_arm']} impressions per arm, "
                 f">= {t['min_clicks']} clicks, p < {t['alpha']})")
    if r.get("incomplete"):
        lines.append(f"INCOMPLETE: {r['events_backlog']} impressions wait in the spill file (a database outage); "
                     "they are replayed automatically once the store answers")
    return "\n".join(lines)
