"""Tables of the event store and the engine factory (SQLite WAL by default, PostgreSQL by URL).

Times are unix seconds (float) so SQLite and PostgreSQL compare them the same way.
Passage text is stored once per sha256 of its content: the same passage shown in many
impressions costs one row in `passages` and a 64-char key in `shown`.
"""
from __future__ import annotations

import hashlib

from sqlalchemy import (Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, create_engine, event)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


USER_KEY_LEN = 200  # column widths the API enforces too (PostgreSQL refuses longer values)
DOC_ID_LEN = 500


class Base(DeclarativeBase):
    pass


class Passage(Base):
    __tablename__ = "passages"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    text: Mapped[str] = mapped_column(Text)


class Impression(Base):
    __tablename__ = "impressions"
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts: Mapped[float] = mapped_column(Float)
    domain: Mapped[str] = mapped_column(String(64))
    variant: Mapped[str] = mapped_column(String(16))  # "domain" | "base"
    model: Mapped[str] = mapped_column(String(200))
    user_key: Mapped[str | None] = mapped_column(String(USER_KEY_LEN), nullable=True)
    query: Mapped[str] = mapped_column(Text)
    latency_ms: Mapped[float] = mapped_column(Float)
    n_documents: Mapped[int] = mapped_column(Integer)  # documents in the request: bounds a click index
    __table_args__ = (Index("ix_impressions_domain_ts", "domain", "ts"),)


class Shown(Base):
    __tablename__ = "shown"
    request_id: Mapped[str] = mapped_column(ForeignKey("impressions.request_id", ondelete="CASCADE"),
                                            primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0 = top result
    index: Mapped[int] = mapped_column(Integer)  # position in the request's documents list
    doc_id: Mapped[str | None] = mapped_column(String(DOC_ID_LEN), nullable=True)
    score: Mapped[float] = mapped_column(Float)
    passage_hash: Mapped[str] = mapped_column(ForeignKey("passages.hash"))


class Click(Base):
    __tablename__ = "clicks"
    request_id: Mapped[str] = mapped_column(ForeignKey("impressions.request_id", ondelete="CASCADE"),
                                            primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)  # the primary key makes repeats no-ops
    ts: Mapped[float] = mapped_column(Float)


class Label(Base):
    """An expert's grade (1-5) of a passage shown for a logged query of a domain: one row per labeller
    and (query, passage); grading again replaces the grade and its time."""
    __tablename__ = "labels"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    domain: Mapped[str] = mapped_column(String(64))
    query_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the query text
    query: Mapped[str] = mapped_column(Text)
    passage_hash: Mapped[str] = mapped_column(ForeignKey("passages.hash"))
    doc_id: Mapped[str | None] = mapped_column(String(500), nullable=True)
    relevance: Mapped[int] = mapped_column(Integer)
    labeller: Mapped[str] = mapped_column(String(100))
    ts: Mapped[float] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("domain", "query_hash", "passage_hash", "labeller", name="uq_labels_pair"),
                      Index("ix_labels_domain_query", "domain", "query_hash"))


class ArmError(Base):
    """A rerank whose arm's model failed (the base answered instead, or the request failed): the error
    rate guardrail of champion vs challenger (state/sequential.py). New table: create_all adds it to an
    existing database."""
    __tablename__ = "arm_errors"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[float] = mapped_column(Float)
    domain: Mapped[str] = mapped_column(String(64))
    variant: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(300))
    __table_args__ = (Index("ix_arm_errors_domain_ts", "domain", "ts"),)


class Decision(Base):
    """One outcome of a champion/challenger test (state/challenge.py): promote, reject or inconclusive,
    with the statistics and reasons it was taken on (JSON text) and who took it."""
    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[float] = mapped_column(Float)
    domain: Mapped[str] = mapped_column(String(64))
    champion: Mapped[str] = mapped_column(String(200))
    challenger: Mapped[str] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(100))
    stats: Mapped[str] = mapped_column(Text)
    reasons: Mapped[str] = mapped_column(Text)
    __table_args__ = (Index("ix_decisions_domain_ts", "domain", "ts"),)


class DomainEvent(Base):
    """A step of a domain's model life that no other record keeps (a challenger set or withdrawn, an
    automatic training started): the admin page's timeline reads it with jobs and decisions."""
    __tablename__ = "domain_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[float] = mapped_column(Float)
    domain: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    detail: Mapped[str] = mapped_column(Text)
    __table_args__ = (Index("ix_domain_events_domain_ts", "domain", "ts"),)


def passage_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dialect_insert(engine: Engine, table):
    """INSERT with the dialect's ON CONFLICT clauses (SQLite and PostgreSQL spell them alike)."""
    return (postgresql if engine.dialect.name == "postgresql" else sqlite).insert(table)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # timeout: wait for another process' write lock instead of failing at once.
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # WAL: readers never block the single writer
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
        return engine
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]  # psycopg 3, not the default psycopg2
    return create_engine(url, pool_pre_ping=True)


def create_tables(engine: Engine) -> None:
    """Idempotent; two processes racing to create the tables on PostgreSQL is tolerated."""
    for attempt in range(3):
        try:
            Base.metadata.create_all(engine)
            return
        except (IntegrityError, ProgrammingError, OperationalError):
            if attempt == 2:
                raise
