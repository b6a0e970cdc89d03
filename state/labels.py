"""Expert labels: the queue of a domain's logged queries to grade, the grades (1-5, who, when) and
their export in the labels source format training reads (query, document, relevance).

The queue comes from the event store: each distinct query text of a domain, with the passages that
were shown for it (best position first, across all its impressions). Order `frequent`: most
impressions first. Order `uncertain`: smallest mean score margin between the top two shown passages
first (the model could hardly tell them apart), queries with a single passage last.
"""
from __future__ import annotations

import hashlib
import time
from typing import Any, Iterable, Literal

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, aliased

from state.db import Impression, Label, Passage, Shown, dialect_insert
from state.store import Store, StoreError

Order = Literal["frequent", "uncertain"]
GRADES = range(1, 6)


class InvalidLabel(StoreError):
    """A grade that does not fit a shown passage of a logged query (-> 422)."""


def query_hash(query: str) -> str:
    return hashlib.sha256(query.encode("utf-8")).hexdigest()


def _round_half_up(x: float) -> int:
    return int(x + 0.5)


class LabelStore:
    """Grades live in the event store's database (table `labels`, state/db.py)."""

    def __init__(self, store: Store):
        self.engine = store.engine

    # ---- the queue ---------------------------------------------------------------
    def queue(self, domain: str, order: Order = "frequent", limit: int = 20, passages: int = 10,
              pending_only: bool = True) -> list[dict[str, Any]]:
        """[{query, query_id, impressions, last_seen, margin, passages: [{passage_id, doc_id, text, score,
        position, labels: {labeller: grade}}]}]; `pending_only` skips queries whose shown passages are
        all graded."""
        s0, s1 = aliased(Shown), aliased(Shown)
        margin = func.avg(s0.score - s1.score)
        q = (select(Impression.query, func.count(func.distinct(Impression.request_id)), func.max(Impression.ts),
                    margin)
             .outerjoin(s0, and_(s0.request_id == Impression.request_id, s0.position == 0))
             .outerjoin(s1, and_(s1.request_id == Impression.request_id, s1.position == 1))
             .where(Impression.domain == domain).group_by(Impression.query))
        with Session(self.engine) as db:
            rows = db.execute(q).all()
        if order == "uncertain":  # no margin (one passage shown): nothing to be unsure about, last
            rows.sort(key=lambda r: (r[3] is None, r[3] if r[3] is not None else 0.0, -r[1], -r[2]))
        else:
            rows.sort(key=lambda r: (-r[1], -r[2]))
        out: list[dict[str, Any]] = []
        for start in range(0, len(rows), 50):  # passages and grades for 50 queries per round trip
            chunk = rows[start:start + 50]
            shown = self._shown(domain, [r[0] for r in chunk], passages)
            grades = self._grades(domain, [query_hash(r[0]) for r in chunk])
            for text, n, last, m in chunk:
                qh = query_hash(text)
                items = [{**p, "labels": grades.get((qh, p["passage_id"]), {})} for p in shown.get(text, [])]
                if pending_only and items and all(i["labels"] for i in items):
                    continue
                out.append({"query": text, "query_id": qh, "impressions": int(n), "last_seen": float(last),
                            "margin": None if m is None else float(m), "passages": items})
                if len(out) >= limit:
                    return out
        return out

    def _shown(self, domain: str, queries: list[str], per_query: int) -> dict[str, list[dict[str, Any]]]:
        q = (select(Impression.query, Shown.passage_hash, Passage.text, Shown.doc_id, Shown.score, Shown.position,
                    Impression.ts)
             .join(Shown, Shown.request_id == Impression.request_id)
             .join(Passage, Passage.hash == Shown.passage_hash)
             .where(Impression.domain == domain, Impression.query.in_(queries))
             .order_by(Impression.ts.desc()))
        best: dict[str, dict[str, dict[str, Any]]] = {}
        with Session(self.engine) as db:
            for query, h, text, doc_id, score, pos, _ts in db.execute(q):
                seen = best.setdefault(query, {})
                if h not in seen:  # newest impression first: its score and doc id win
                    seen[h] = {"passage_id": h, "doc_id": doc_id, "text": text, "score": float(score),
                               "position": int(pos)}
                else:
                    seen[h]["position"] = min(seen[h]["position"], int(pos))
        return {query: sorted(ps.values(), key=lambda p: (p["position"], -p["score"]))[:per_query]
                for query, ps in best.items()}

    def _grades(self, domain: str, qhashes: list[str]) -> dict[tuple[str, str], dict[str, int]]:
        out: dict[tuple[str, str], dict[str, int]] = {}
        with Session(self.engine) as db:
            for qh, ph, who, rel in db.execute(
                    select(Label.query_hash, Label.passage_hash, Label.labeller, Label.relevance)
                    .where(Label.domain == domain, Label.query_hash.in_(qhashes))):
                out.setdefault((qh, ph), {})[who] = int(rel)
        return out

    # ---- grades ------------------------------------------------------------------
    def grade(self, domain: str, query: str, grades: Iterable[tuple[str, int]], labeller: str,
              now: float | None = None) -> int:
        """Store (passage_id, relevance) grades of one query by one labeller, all or nothing.

        Every passage must have been shown for this query in this domain; a repeat replaces the grade."""
        grades = list(grades)
        if not grades:
            raise InvalidLabel("labels: give at least one grade")
        if not labeller.strip():
            raise InvalidLabel("labeller: must not be empty")
        now = time.time() if now is None else now
        with Session(self.engine) as db, db.begin():
            shown = {h: doc for h, doc in db.execute(
                select(Shown.passage_hash, func.max(Shown.doc_id))
                .join(Impression, Impression.request_id == Shown.request_id)
                .where(Impression.domain == domain, Impression.query == query).group_by(Shown.passage_hash))}
            if not shown:
                raise InvalidLabel(f"query: not a logged query of domain {domain!r}")
            rows = []
            for i, (pid, rel) in enumerate(grades):
                if pid not in shown:
                    raise InvalidLabel(f"labels.{i}.passage_id: {pid!r} was not shown for this query")
                if isinstance(rel, bool) or rel not in GRADES:
                    raise InvalidLabel(f"labels.{i}.relevance: must be an integer 1-5, got {rel!r}")
                rows.append({"domain": domain, "query_hash": query_hash(query), "query": query,
                             "passage_hash": pid, "doc_id": shown[pid], "relevance": int(rel),
                             "labeller": labeller.strip(), "ts": now})
            ins = dialect_insert(self.engine, Label.__table__)
            db.execute(ins.on_conflict_do_update(
                index_elements=["domain", "query_hash", "passage_hash", "labeller"],
                set_={"relevance": ins.excluded.relevance, "ts": ins.excluded.ts}), rows)
        return len(rows)

    def summary(self, domain: str) -> dict[str, Any]:
        """{labels, queries, pairs, relevance: {"1".."5": n}, labellers: {name: n}, last}."""
        with Session(self.engine) as db:
            where = Label.domain == domain
            n, queries, last = db.execute(select(func.count(), func.count(func.distinct(Label.query_hash)),
                                                 func.max(Label.ts)).where(where)).one()
            pairs = db.execute(select(func.count()).select_from(
                select(Label.query_hash, Label.passage_hash).where(where).distinct().subquery())).scalar_one()
            rel = dict(db.execute(select(Label.relevance, func.count()).where(where).group_by(Label.relevance)).all())
            who = dict(db.execute(select(Label.labeller, func.count()).where(where).group_by(Label.labeller)).all())
        return {"domain": domain, "labels": int(n), "queries": int(queries), "pairs": int(pairs),
                "relevance": {str(g): int(rel.get(g, 0)) for g in GRADES},
                "labellers": {k: int(v) for k, v in sorted(who.items())}, "last": last}

    def export_rows(self, domain: str) -> list[dict[str, Any]]:
        """One row per graded (query, passage), in the labels source format (training/sources/labels.py):
        query, document, relevance (the labellers' mean grade, rounded half up), doc_id, labellers."""
        q = (select(Label.query, Label.query_hash, Label.passage_hash, Passage.text, func.max(Label.doc_id),
                    func.avg(Label.relevance), func.count())
             .join(Passage, Passage.hash == Label.passage_hash).where(Label.domain == domain)
             .group_by(Label.query, Label.query_hash, Label.passage_hash, Passage.text)
             .order_by(Label.query_hash, Label.passage_hash))
        with Session(self.engine) as db:
            return [{"query": query, "document": text, "relevance": _round_half_up(float(mean)),
                     "doc_id": doc_id or "", "labellers": int(n)}
                    for query, _qh, _ph, text, doc_id, mean, n in db.execute(q).all()]
