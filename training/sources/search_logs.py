"""Search logs (impressions + clicks) -> examples.

An impression is {request_id, domain, query, shown: [{position, doc_text|text, doc_id?, index?}],
clicked: [...]} as state.store.Store.iter_impressions yields it (clicked = request document
indices, matched to shown[].index) or a plain dict (no index: clicked = positions). Default rules: a clicked passage is positive; a passage shown above the
lowest click and not clicked is negative (the user saw it and skipped it); passages below the
last click are unjudged and dropped. Impressions without clicks are dropped.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable

from training.examples import Example, SourceError


@dataclass
class ClickRules:
    skip_above_click_negative: bool = True  # shown above a click, not clicked -> negative
    below_last_click_negative: int = 0  # also take this many unclicked passages below the last click
    min_clicks: int = 1


def examples_from_impressions(impressions: Iterable[dict[str, Any]], domain: str | None = None,
                              rules: ClickRules | None = None) -> tuple[list[Example], dict]:
    rules = rules or ClickRules()
    out: list[Example] = []
    seen = used = 0
    for n, imp in enumerate(impressions, 1):
        where = f"impression {n} (request {imp.get('request_id')!r})" if isinstance(imp, dict) else f"impression {n}"
        if not isinstance(imp, dict):
            raise SourceError(f"{where}: expected a mapping")
        if domain is not None and imp.get("domain") not in (None, domain):
            continue
        seen += 1
        query, shown, clicked = imp.get("query"), imp.get("shown"), imp.get("clicked") or []
        if not isinstance(query, str) or not query.strip() or not isinstance(shown, list):
            raise SourceError(f"{where}: needs a query string and a 'shown' list")
        try:
            clicks = {int(c) for c in clicked}
        except (TypeError, ValueError):
            raise SourceError(f"{where}: clicked must be a list of positions") from None
        if len(clicks) < rules.min_clicks:
            continue
        qid = "log-" + hashlib.sha256(query.strip().lower().encode()).hexdigest()[:16]
        if shown and all(isinstance(s, dict) and "index" in s for s in shown):
            # store rows: clicks are document indices; turn them into display positions
            at = {int(s["index"]): int(s["position"]) for s in shown}
            clicks = {at[c] for c in clicks if c in at}
            if len(clicks) < rules.min_clicks:
                continue
        last = max(clicks)
        below = 0
        for item in sorted(shown, key=lambda s: int(s.get("position", 0))):
            pos, text = int(item.get("position", -1)), item.get("doc_text", item.get("text"))
            if not isinstance(text, str) or not text.strip():
                raise SourceError(f"{where}: shown item at position {pos} has no doc_text")
            doc_id = item.get("doc_id")
            if pos in clicks:
                out.append(Example(qid, query, text, 1.0, "search_logs", doc_id))
            elif pos < last and rules.skip_above_click_negative:
                out.append(Example(qid, query, text, 0.0, "search_logs", doc_id))
            elif pos > last and below < rules.below_last_click_negative:
                below += 1
                out.append(Example(qid, query, text, 0.0, "search_logs", doc_id))
        used += 1
    pos = sum(1 for e in out if e.label > 0)
    return out, {"impressions": seen, "with_clicks": used, "pairs": len(out), "positives": pos,
                 "negatives": len(out) - pos}


def examples_from_store(store: Any, domain: str, rules: ClickRules | None = None,
                        since: float | None = None) -> tuple[list[Example], dict]:
    """Read the domain's clicked impressions from state.store.Store (streamed)."""
    return examples_from_impressions(store.iter_impressions(domain, since=since, only_clicked=True),
                                     domain, rules)
