"""Search logs (impressions + clicks) -> examples.

An impression is {request_id, domain, query, shown: [{position, doc_text|text, doc_id?, index?}],
clicked: [...]} as state.store.Store.iter_impressions yields it (clicked = request document
indices, matched to shown[].index) or a plain dict (no index: clicked = positions). Default rules: a clicked passage is positive; a passage shown above the
lowest click and not clicked is negative (the user saw it and skipped it); passages below the
last click are unjudged and dropped. Impressions without clicks are dropped.

Position bias (ClickRules.position_bias = "ipw"): a user clicks only what they looked at, and they look
at rank 1 far more often than at rank 8, so raw clicks over-represent passages the serving model already
put on top. The correction is a position-based click model (P(click) = P(examined | rank) x
P(relevant | query, passage)) fitted by EM on all of the domain's impressions (clicked or not), which
estimates the examination propensity of each rank; each click is then weighted by 1 / propensity (inverse
propensity weighting), the propensity clipped from below (`propensity_clip`) so that a deep click cannot
dominate. The fine-tuning losses take no per-example weight, so a click enters round(weight) times.
The propensities are identified only where the same passage was shown for the same query at different
ranks (the A/B arms of a domain rank differently, and so does a model before and after a promote).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from training.examples import Example, SourceError

MIN_PAIRS_AT_SEVERAL_RANKS = 10  # (query, passage) pairs seen at >= 2 ranks, below which ipw is refused


@dataclass
class ClickRules:
    skip_above_click_negative: bool = True  # shown above a click, not clicked -> negative
    below_last_click_negative: int = 0  # also take this many unclicked passages below the last click
    min_clicks: int = 1
    position_bias: str = "none"  # "none": every click once; "ipw": weighted by 1 / examination propensity
    propensity_clip: float = 0.05  # propensities below this count as this (a click enters at most 1/clip times)
    max_rank: int = 50  # ranks estimated; deeper ones share the last estimated propensity

    @classmethod
    def from_config(cls, cfg: Any) -> "ClickRules":
        """The rules a training configuration (training.config.TrainConfig) asks for."""
        return cls(position_bias=cfg.click_position_bias, propensity_clip=cfg.click_propensity_clip)


def _where(n: int, imp: Any) -> str:
    return f"impression {n} (request {imp.get('request_id')!r})" if isinstance(imp, dict) else f"impression {n}"


def _read(n: int, imp: Any) -> tuple[str, list[dict], set[int]]:
    """(query, shown in rank order, clicked positions) of one impression, checked."""
    where = _where(n, imp)
    if not isinstance(imp, dict):
        raise SourceError(f"{where}: expected a mapping")
    query, shown, clicked = imp.get("query"), imp.get("shown"), imp.get("clicked") or []
    if not isinstance(query, str) or not query.strip() or not isinstance(shown, list):
        raise SourceError(f"{where}: needs a query string and a 'shown' list")
    try:
        clicks = {int(c) for c in clicked}
    except (TypeError, ValueError):
        raise SourceError(f"{where}: clicked must be a list of positions") from None
    if shown and all(isinstance(s, dict) and "index" in s for s in shown):
        # store rows: clicks are document indices; turn them into display positions
        at = {int(s["index"]): int(s["position"]) for s in shown}
        clicks = {at[c] for c in clicks if c in at}
    return query, sorted(shown, key=lambda s: int(s.get("position", 0)) if isinstance(s, dict) else 0), clicks


def _query_id(query: str) -> str:
    return "log-" + hashlib.sha256(query.strip().lower().encode()).hexdigest()[:16]


def estimate_propensities(impressions: Iterable[dict[str, Any]], domain: str | None = None, max_rank: int = 50,
                          iterations: int = 1000, tol: float = 1e-6) -> tuple[list[float], dict]:
    """Examination propensity per rank (rank 0 = 1.0) of a position-based click model, by EM over every
    impression (Chuklin, Markov & de Rijke, "Click Models for Web Search", 2015, ch. 4; the EM of Wang et
    al. 2018 with one relevance parameter per (query, passage) instead of a regression). Hand-written:
    the click-model packages on PyPI are Python 2 (clickmodels, 2014) or need JAX (clax-models)."""
    ranks: list[int] = []
    pairs: list[int] = []
    clicks: list[int] = []
    pair_ids: dict[tuple[str, str], int] = {}
    n_imp = 0
    for n, imp in enumerate(impressions, 1):
        if domain is not None and isinstance(imp, dict) and imp.get("domain") not in (None, domain):
            continue
        query, shown, clicked = _read(n, imp)
        n_imp += 1
        qid = _query_id(query)
        for item in shown:
            pos = int(item.get("position", -1))
            if not 0 <= pos < max_rank:
                continue
            key = item.get("doc_id") or hashlib.sha256(str(item.get("doc_text", item.get("text"))).encode()).hexdigest()
            ranks.append(pos)
            pairs.append(pair_ids.setdefault((qid, key), len(pair_ids)))
            clicks.append(pos in clicked)
    if not ranks or not any(clicks):
        raise SourceError("position-bias correction: the search logs have no clicked impression to estimate "
                          "examination propensities from")
    r, p, c = np.asarray(ranks), np.asarray(pairs), np.asarray(clicks, dtype=bool)
    n_r, n_p = np.bincount(r), np.bincount(p)
    several = int(sum(len(s) > 1 for s in _ranks_per_pair(r, p).values()))
    if several < MIN_PAIRS_AT_SEVERAL_RANKS:
        raise SourceError(
            f"position-bias correction needs the same passage shown for a query at different ranks (A/B arms "
            f"that rank differently, a model change) to tell position from relevance: {several} (query, passage) "
            f"pairs were, at least {MIN_PAIRS_AT_SEVERAL_RANKS} needed; train with click_position_bias 'none'")
    theta, gamma = np.full(len(n_r), 0.5), np.full(len(n_p), 0.5)
    done = 0
    for done in range(1, iterations + 1):
        t, g = theta[r], gamma[p]
        unclicked = 1.0 - t * g  # P(no click) under the model
        examined = np.where(c, 1.0, t * (1.0 - g) / unclicked)  # P(examined | click or not)
        relevant = np.where(c, 1.0, (1.0 - t) * g / unclicked)  # P(relevant | click or not)
        new_theta = np.clip(np.bincount(r, examined, len(n_r)) / np.maximum(n_r, 1), 1e-6, 1 - 1e-6)
        gamma = np.clip(np.bincount(p, relevant, len(n_p)) / n_p, 1e-6, 1 - 1e-6)
        change = float(np.max(np.abs(new_theta - theta)))
        theta = new_theta
        if change < tol:
            break
    seen = n_r > 0
    theta = np.where(seen, theta, np.nan)
    props = np.minimum(theta / theta[0], 1.0) if seen[0] else theta / np.nanmax(theta)
    out = [round(float(x), 4) for x in np.nan_to_num(props, nan=float(np.nanmin(props)))]
    return out, {"estimator": "position-based click model, EM over all impressions", "impressions": n_imp,
                 "pairs": len(pair_ids), "pairs_at_several_ranks": several, "iterations": done,
                 "impressions_per_rank": [int(x) for x in n_r], "propensities": out}


def _ranks_per_pair(r: np.ndarray, p: np.ndarray) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for pair, rank in zip(p.tolist(), r.tolist()):
        out.setdefault(pair, set()).add(rank)
    return out


def copies(propensities: list[float], position: int, clip: float) -> int:
    """How many times a click at `position` enters: round(1 / propensity), the propensity clipped to >= clip."""
    p = propensities[min(position, len(propensities) - 1)]
    return max(1, round(1.0 / max(p, clip)))


def examples_from_impressions(impressions: Iterable[dict[str, Any]], domain: str | None = None,
                              rules: ClickRules | None = None,
                              propensities: list[float] | None = None) -> tuple[list[Example], dict]:
    """Examples of the clicked impressions. With rules.position_bias "ipw", each click enters
    copies(propensities, its position) times; the propensities are estimated from these impressions when
    not given (examples_from_store estimates them from every impression, clicked or not)."""
    rules = rules or ClickRules()
    bias: dict[str, Any] = {"method": rules.position_bias}
    if rules.position_bias == "ipw":
        if propensities is None:
            impressions = list(impressions)
            propensities, est = estimate_propensities(impressions, domain, rules.max_rank)
            bias |= est
        bias |= {"propensities": propensities, "propensity_clip": rules.propensity_clip}
    elif rules.position_bias != "none":
        raise SourceError(f"unknown position_bias {rules.position_bias!r}: 'none' or 'ipw'")
    out: list[Example] = []
    seen = used = clicked_pairs = 0
    for n, imp in enumerate(impressions, 1):
        if isinstance(imp, dict) and domain is not None and imp.get("domain") not in (None, domain):
            continue
        seen += 1
        query, shown, clicks = _read(n, imp)
        if len(clicks) < rules.min_clicks:
            continue
        qid = _query_id(query)
        last = max(clicks)
        below = 0
        for item in shown:
            pos, text = int(item.get("position", -1)), item.get("doc_text", item.get("text"))
            if not isinstance(text, str) or not text.strip():
                raise SourceError(f"{_where(n, imp)}: shown item at position {pos} has no doc_text")
            doc_id = item.get("doc_id")
            if pos in clicks:
                clicked_pairs += 1
                times = copies(propensities, pos, rules.propensity_clip) if propensities else 1
                out += [Example(qid, query, text, 1.0, "search_logs", doc_id, {"position": pos}) for _ in range(times)]
            elif pos < last and rules.skip_above_click_negative:
                out.append(Example(qid, query, text, 0.0, "search_logs", doc_id))
            elif pos > last and below < rules.below_last_click_negative:
                below += 1
                out.append(Example(qid, query, text, 0.0, "search_logs", doc_id))
        used += 1
    pos = sum(1 for e in out if e.label > 0)
    return out, {"impressions": seen, "with_clicks": used, "pairs": len(out), "positives": clicked_pairs,
                 "weighted_positives": pos, "negatives": len(out) - pos, "position_bias": bias}


def examples_from_store(store: Any, domain: str, rules: ClickRules | None = None,
                        since: float | None = None) -> tuple[list[Example], dict]:
    """Read the domain's clicked impressions from state.store.Store (streamed); with ipw the propensities
    come from every impression of the domain (clicked or not), read in a first pass."""
    rules = rules or ClickRules()
    props, est = None, {}
    if rules.position_bias == "ipw":
        props, est = estimate_propensities(store.iter_impressions(domain, since=since), domain, rules.max_rank)
    ex, stats = examples_from_impressions(store.iter_impressions(domain, since=since, only_clicked=True),
                                          domain, rules, props)
    stats["position_bias"] |= est
    return ex, stats
