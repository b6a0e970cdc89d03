"""Stored decisions of champion/challenger tests and the domain events of the timeline (tables
`decisions` and `domain_events`, state/db.py), in the event store's database."""
from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from state.db import Decision, DomainEvent
from state.store import Store


class DecisionLog:
    def __init__(self, store: Store):
        self.engine = store.engine

    def add_decision(self, domain: str, champion: str, challenger: str, outcome: str, actor: str,
                     stats: dict[str, Any], reasons: list[str]) -> dict[str, Any]:
        row = Decision(ts=time.time(), domain=domain, champion=champion, challenger=challenger, outcome=outcome,
                       actor=actor, stats=json.dumps(stats), reasons=json.dumps(reasons))
        with Session(self.engine, expire_on_commit=False) as db, db.begin():
            db.add(row)
        return _decision(row)

    def decisions(self, domain: str, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        q = select(Decision).where(Decision.domain == domain).order_by(Decision.ts.desc()).limit(limit)
        with Session(self.engine) as db:
            return [_decision(r) for r in db.execute(q).scalars()]

    def add_event(self, domain: str, kind: str, actor: str, model: str | None = None,
                  detail: dict[str, Any] | None = None) -> None:
        with Session(self.engine) as db, db.begin():
            db.add(DomainEvent(ts=time.time(), domain=domain, kind=kind, actor=actor, model=model,
                               detail=json.dumps(detail or {})))

    def events(self, domain: str, limit: int = 200) -> list[dict[str, Any]]:
        """Newest first."""
        q = select(DomainEvent).where(DomainEvent.domain == domain).order_by(DomainEvent.ts.desc()).limit(limit)
        with Session(self.engine) as db:
            return [{"ts": r.ts, "kind": r.kind, "actor": r.actor, "model": r.model, "detail": json.loads(r.detail)}
                    for r in db.execute(q).scalars()]


def _decision(r: Decision) -> dict[str, Any]:
    return {"id": r.id, "ts": r.ts, "domain": r.domain, "champion": r.champion, "challenger": r.challenger,
            "outcome": r.outcome, "actor": r.actor, "stats": json.loads(r.stats), "reasons": json.loads(r.reasons)}


def timeline(domain: str, jobs: list[dict[str, Any]], log: DecisionLog) -> list[dict[str, Any]]:
    """A domain's model life, newest first: {ts, kind, actor, model, summary}. kind: training (a job
    started), trained (published), gated (a gate refused it), failed, cancelled (from the job
    records, state/jobs.py), challenged / withdrawn / autopilot (domain events) and decided."""
    out: list[dict[str, Any]] = []
    for j in jobs:
        by = (j.get("config") or {}).get("by", "admin")
        out.append({"ts": j["created"], "kind": "training", "actor": by, "model": None, "summary": f"job {j['id']}"})
        if j["status"] == "succeeded":
            gates = ", ".join(g.get("gate", "?") for g in j.get("gates") or [])
            out.append({"ts": j["finished"], "kind": "trained", "actor": by, "model": j.get("version"),
                        "summary": f"passed the gates ({gates})" if gates else "published"})
        elif j["status"] in ("failed", "cancelled"):
            gated = j["status"] == "failed" and j.get("stage") == "gates"
            out.append({"ts": j.get("finished") or j["updated"], "kind": "gated" if gated else j["status"],
                        "actor": by, "model": None, "summary": (j.get("error") or "")[:300]})
    for e in log.events(domain):
        out.append({"ts": e["ts"], "kind": e["kind"], "actor": e["actor"], "model": e["model"],
                    "summary": e["detail"].get("summary", "")})
    for d in log.decisions(domain):
        out.append({"ts": d["ts"], "kind": "decided", "actor": d["actor"], "model": d["challenger"],
                    "summary": f"{d['outcome']} {d['challenger']} vs {d['champion']}: " + "; ".join(d["reasons"])})
    return sorted(out, key=lambda e: e["ts"], reverse=True)
