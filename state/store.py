"""The event store: impressions (what was shown, by which arm), clicks, and the reads on them.

Used by serving (write impressions, record feedback), the A/B report and the search-log
training source. Sync API on purpose: async callers run it in a worker thread.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from sqlalchemy import case, func, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from state.db import (ArmError, Click, Impression, Label, Passage, Shown, create_tables, dialect_insert, make_engine,
                      passage_hash)


class StoreError(Exception):
    pass


class StoreUnavailable(StoreError):
    """The database cannot be reached or is busy: nothing was learned about the rows; retry later."""


# Errors of the connection or the server's state, not of the row being written.
_UNAVAILABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError, sa_exc.TimeoutError)


def _text(s: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: stored as U+FFFD (on every database, so both agree)."""
    return s.replace("\x00", "\ufffd") if s is not None and "\x00" in s else s


class UnknownRequest(StoreError):
    """Feedback for a request id with no impression (-> 404)."""


class InvalidClick(StoreError):
    """A clicked entry that does not name a shown passage of the impression (-> 422)."""


@dataclass
class ShownPassage:
    position: int  # rank in the response, 0 = top
    index: int  # index in the request's documents
    text: str
    score: float
    doc_id: str | None = None


@dataclass
class ImpressionEvent:
    """One rerank as the user saw it; what serving hands to the event logger."""
    request_id: str
    domain: str
    variant: str
    model: str
    query: str
    latency_ms: float
    n_documents: int
    shown: list[ShownPassage]
    user_key: str | None = None
    ts: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ImpressionEvent":
        return cls(**{**d, "shown": [ShownPassage(**s) for s in d["shown"]]})


class Store:
    def __init__(self, url: str):
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.engine = make_engine(url)
        create_tables(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def _insert_ignore(self, table):
        """INSERT ... ON CONFLICT DO NOTHING: replays of a batch and repeated clicks are no-ops."""
        return dialect_insert(self.engine, table).on_conflict_do_nothing()

    # ---- writes ------------------------------------------------------------------
    def add_impressions(self, events: Sequence[ImpressionEvent]) -> int:
        """Store a batch in one transaction (all or nothing). Returns how many were new."""
        if not events:
            return 0
        passages: dict[str, str] = {}
        imps, shown = [], []
        for e in events:
            imps.append({"request_id": e.request_id, "ts": e.ts, "domain": e.domain, "variant": e.variant,
                         "model": e.model, "user_key": _text(e.user_key), "query": _text(e.query),
                         "latency_ms": float(e.latency_ms), "n_documents": e.n_documents})
            for s in e.shown:
                text = _text(s.text)
                h = passage_hash(text)
                passages[h] = text
                shown.append({"request_id": e.request_id, "position": s.position, "index": s.index,
                              "doc_id": _text(s.doc_id), "score": float(s.score), "passage_hash": h})
        with Session(self.engine) as db, db.begin():
            # Sorted keys: concurrent writers take row locks in one order (no PostgreSQL deadlock).
            db.execute(self._insert_ignore(Passage.__table__),
                       [{"hash": h, "text": passages[h]} for h in sorted(passages)])
            new = db.execute(self._insert_ignore(Impression.__table__).returning(Impression.request_id),
                             imps).scalars().all()
            if shown:
                db.execute(self._insert_ignore(Shown.__table__), shown)
        return len(new)

    def add_impressions_each(self, events: Sequence[ImpressionEvent]
                             ) -> tuple[int, list[tuple[ImpressionEvent, str]]]:
        """Store what can be stored: the batch in one transaction, or, if the database refuses it,
        row by row, so one bad row never costs the others. Returns (new rows, [(refused event,
        reason)]). Raises StoreUnavailable when the database itself fails (then retry the batch)."""
        try:
            return self.add_impressions(events), []
        except _UNAVAILABLE as e:
            raise StoreUnavailable(str(e)) from e
        except Exception as e:  # noqa: BLE001 - some row is bad: find it below
            if len(events) == 1:
                return 0, [(events[0], f"{type(e).__name__}: {e}")]
        new, refused = 0, []
        for e in events:
            try:
                new += self.add_impressions([e])
            except _UNAVAILABLE as err:
                raise StoreUnavailable(str(err)) from err
            except Exception as err:  # noqa: BLE001 - this row's data (encoding, a length, a constraint)
                refused.append((e, f"{type(err).__name__}: {err}"))
        return new, refused

    def record_clicks(self, request_id: str, clicked: Iterable[int | str]) -> dict[str, Any]:
        """Validate clicks against the impression and store them; repeats change nothing.

        An int is a document index in the original request; a str is a document id.
        Raises UnknownRequest or InvalidClick before writing anything.
        """
        with Session(self.engine) as db, db.begin():
            imp = db.get(Impression, request_id)
            if imp is None:
                raise UnknownRequest(f"unknown request_id {request_id!r}")
            rows = db.execute(select(Shown.index, Shown.doc_id).where(Shown.request_id == request_id)).all()
            shown_idx = {r.index for r in rows}
            by_id = {r.doc_id: r.index for r in rows if r.doc_id is not None}
            indices: list[int] = []
            for i, c in enumerate(clicked):
                if isinstance(c, bool):
                    raise InvalidClick(f"clicked[{i}]: expected a document index or id, got {c!r}")
                if isinstance(c, int):
                    if not 0 <= c < imp.n_documents:
                        raise InvalidClick(f"clicked[{i}]: index {c} out of range "
                                           f"(the request had {imp.n_documents} documents)")
                    if c not in shown_idx:
                        raise InvalidClick(f"clicked[{i}]: document {c} was not in the returned results")
                    indices.append(c)
                elif isinstance(c, str):
                    if c not in by_id:
                        raise InvalidClick(f"clicked[{i}]: unknown document id {c!r} for this request")
                    indices.append(by_id[c])
                else:
                    raise InvalidClick(f"clicked[{i}]: expected a document index or id, got {c!r}")
            now = time.time()
            uniq = sorted(set(indices))
            if uniq:
                db.execute(self._insert_ignore(Click.__table__),
                           [{"request_id": request_id, "index": ix, "ts": now} for ix in uniq])
            all_clicked = db.execute(select(Click.index).where(Click.request_id == request_id)
                                     .order_by(Click.index)).scalars().all()
        return {"request_id": request_id, "clicked": list(all_clicked)}

    # ---- reads -------------------------------------------------------------------
    def has_impression(self, request_id: str) -> bool:
        with Session(self.engine) as db:
            return db.get(Impression, request_id) is not None

    def count_impressions(self, domain: str | None = None) -> int:
        q = select(func.count()).select_from(Impression)
        if domain is not None:
            q = q.where(Impression.domain == domain)
        with Session(self.engine) as db:
            return int(db.execute(q).scalar_one())

    def frequent_passages(self, domain: str, limit: int) -> list[str]:
        """The texts shown most often in the domain's impressions, most frequent first (what a promote
        embeds with the new version before it takes traffic)."""
        if limit <= 0:
            return []
        seen = func.count().label("seen")
        q = (select(Passage.text, seen).join(Shown, Shown.passage_hash == Passage.hash)
             .join(Impression, Impression.request_id == Shown.request_id).where(Impression.domain == domain)
             .group_by(Passage.hash, Passage.text).order_by(seen.desc(), Passage.hash).limit(limit))
        with Session(self.engine) as db:
            return [text for text, _ in db.execute(q)]

    def count_clicks(self, domain: str | None = None) -> int:
        q = select(func.count()).select_from(Click)
        if domain is not None:
            q = q.join(Impression, Impression.request_id == Click.request_id).where(Impression.domain == domain)
        with Session(self.engine) as db:
            return int(db.execute(q).scalar_one())

    def iter_impressions(self, domain: str, since: float | None = None, until: float | None = None,
                         only_clicked: bool = False, batch: int = 500) -> Iterator[dict[str, Any]]:
        """Impressions of a domain, oldest first, as
        {request_id, ts, domain, query, variant, model, user_key, latency_ms,
         shown: [{position, index, doc_id, text, score}], clicked: [indices]}.
        Streams in batches so a large log is never held in memory at once."""
        q = select(Impression).where(Impression.domain == domain)
        if since is not None:
            q = q.where(Impression.ts >= since)
        if until is not None:
            q = q.where(Impression.ts < until)
        if only_clicked:
            q = q.where(Impression.request_id.in_(select(Click.request_id)))
        return self._iter(q.order_by(Impression.ts, Impression.request_id), batch)

    def _iter(self, q, batch: int = 500) -> Iterator[dict[str, Any]]:
        last: tuple[float, str] | None = None
        while True:
            page = q
            if last is not None:  # keyset pagination: stable under concurrent inserts
                page = q.where((Impression.ts > last[0]) |
                               ((Impression.ts == last[0]) & (Impression.request_id > last[1])))
            with Session(self.engine) as db:
                imps = db.execute(page.limit(batch)).scalars().all()
                if not imps:
                    return
                ids = [i.request_id for i in imps]
                shown: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
                for s, text in db.execute(
                        select(Shown, Passage.text).join(Passage, Passage.hash == Shown.passage_hash)
                        .where(Shown.request_id.in_(ids)).order_by(Shown.request_id, Shown.position)):
                    shown[s.request_id].append({"position": s.position, "index": s.index, "doc_id": s.doc_id,
                                                "text": text, "score": s.score})
                clicks: dict[str, list[int]] = {i: [] for i in ids}
                for rid, ix in db.execute(select(Click.request_id, Click.index)
                                          .where(Click.request_id.in_(ids)).order_by(Click.index)):
                    clicks[rid].append(ix)
                out = [{"request_id": i.request_id, "ts": i.ts, "domain": i.domain, "query": i.query,
                        "variant": i.variant, "model": i.model, "user_key": i.user_key,
                        "latency_ms": i.latency_ms, "n_documents": i.n_documents,
                        "shown": shown[i.request_id], "clicked": clicks[i.request_id]} for i in imps]
            yield from out
            if len(imps) < batch:
                return
            last = (imps[-1].ts, imps[-1].request_id)

    @staticmethod
    def _first_clicks(domain: str, since: float | None, *columns):
        """`columns` and the rank of the first clicked passage (None without a click) per impression."""
        first = (select(Shown.request_id, func.min(Shown.position).label("pos"))
                 .join(Click, (Click.request_id == Shown.request_id) & (Click.index == Shown.index))
                 .group_by(Shown.request_id).subquery())
        q = (select(*columns, first.c.pos).outerjoin(first, first.c.request_id == Impression.request_id)
             .where(Impression.domain == domain))
        return q if since is None else q.where(Impression.ts >= since)

    def arm_rows(self, domain: str, since: float | None = None) -> list[tuple[str, str, float, int | None]]:
        """(variant, model, latency_ms, rank of the first clicked passage or None) per impression:
        everything the A/B report needs, in one query."""
        q = self._first_clicks(domain, since, Impression.variant, Impression.model, Impression.latency_ms)
        with Session(self.engine) as db:
            return [tuple(r) for r in db.execute(q).all()]

    def model_rows(self, domain: str, since: float, models: Sequence[str]
                   ) -> list[tuple[float, str, float, int | None]]:
        """(ts, model, latency_ms, first-click rank or None) per impression of `models` since `since`,
        oldest first: the stream the decision rule reads (state/challenge.py)."""
        q = self._first_clicks(domain, since, Impression.ts, Impression.model, Impression.latency_ms)
        q = q.where(Impression.model.in_(list(models))).order_by(Impression.ts, Impression.request_id)
        with Session(self.engine) as db:
            return [tuple(r) for r in db.execute(q).all()]

    def add_arm_error(self, domain: str, variant: str, model: str, reason: str, ts: float | None = None) -> None:
        with Session(self.engine) as db, db.begin():
            db.add(ArmError(ts=time.time() if ts is None else ts, domain=domain, variant=variant, model=model,
                            reason=_text(reason)[:300]))

    def arm_errors(self, domain: str, since: float) -> dict[str, int]:
        """Model errors per model id of a domain since `since`."""
        q = (select(ArmError.model, func.count()).where(ArmError.domain == domain, ArmError.ts >= since)
             .group_by(ArmError.model))
        with Session(self.engine) as db:
            return {m: int(n) for m, n in db.execute(q).all()}

    def signals_since(self, domain: str, since: float) -> dict[str, int]:
        """New training signal of a domain since `since`: distinct queries with a clicked impression,
        and expert grades (the autopilot's triggers)."""
        clicked = (select(func.count(func.distinct(Impression.query)))
                   .where(Impression.domain == domain, Impression.ts >= since,
                          Impression.request_id.in_(select(Click.request_id))))
        labels = select(func.count()).select_from(Label).where(Label.domain == domain, Label.ts >= since)
        with Session(self.engine) as db:
            return {"clicked_queries": int(db.execute(clicked).scalar_one()),
                    "expert_labels": int(db.execute(labels).scalar_one())}

    def traffic(self, now: float | None = None) -> dict[str, dict[str, int]]:
        """Impressions per domain: {domain: {last_hour, last_day, total}}, in one query."""
        now = time.time() if now is None else now

        def since(seconds: float):
            return func.sum(case((Impression.ts >= now - seconds, 1), else_=0))

        q = (select(Impression.domain, since(3600), since(86400), func.count())
             .group_by(Impression.domain).order_by(Impression.domain))
        with Session(self.engine) as db:
            return {d: {"last_hour": int(h or 0), "last_day": int(day or 0), "total": int(n)}
                    for d, h, day, n in db.execute(q).all()}

    def arm_events(self, domain: str, since: float, until: float) -> list[tuple[float, str, bool]]:
        """(ts, variant, clicked) per impression of a domain in [since, until): the A/B timeline's input."""
        clicked = select(Click.request_id).distinct().subquery()
        q = (select(Impression.ts, Impression.variant, clicked.c.request_id.is_not(None))
             .outerjoin(clicked, clicked.c.request_id == Impression.request_id)
             .where(Impression.domain == domain, Impression.ts >= since, Impression.ts < until)
             .order_by(Impression.ts))
        with Session(self.engine) as db:
            return [(float(t), v, bool(c)) for t, v, c in db.execute(q).all()]
