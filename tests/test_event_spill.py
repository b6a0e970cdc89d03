"""Impressions are never lost to one bad row: row-by-row retry with quarantine, a spill file that
always replays (`reranker events replay`), and an unreachable database that loses nothing.

"Unavailable" is a real PostgreSQL URL on a closed loopback port, not a mock.
"""
from __future__ import annotations

import asyncio
import json
import socket

import pytest
from typer.testing import CliRunner

from cli.main import app as cli
from serving.events import EventLogger
from state import spill
from state.db import make_engine
from state.store import ImpressionEvent, ShownPassage, Store, StoreUnavailable


def event(rid: str, user_key: str | None = "u", query: str = "q") -> ImpressionEvent:
    return ImpressionEvent(request_id=rid, domain="d", variant="base", model="base", query=query, latency_ms=1.0,
                           n_documents=1, shown=[ShownPassage(position=0, index=0, text=f"passage {rid}", score=0.5)],
                           user_key=user_key)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://nobody@127.0.0.1:{port}/nothing?connect_timeout=2"


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'events.db'}")
    yield s
    s.close()


def unavailable(store: Store) -> None:
    """The same Store, its database gone away."""
    store.engine.dispose()
    store.engine = make_engine(closed_port_url())


def test_a_bad_row_never_takes_its_batch_with_it(store, tmp_path):
    spill_path, quarantine_path = tmp_path / "spill.jsonl", tmp_path / "quarantine.jsonl"
    logger = EventLogger(store, max_delay_s=0.05, spill_path=spill_path, quarantine_path=quarantine_path)

    async def run():
        for i in range(20):  # one batch, a bad row in the middle (lone surrogates bypassing the API)
            logger.log(event(f"r{i}", user_key="\ud800" if i == 7 else f"u{i}"))
        await logger.close()

    asyncio.run(run())
    assert store.count_impressions() == 19
    assert not store.has_impression("r7") and store.has_impression("r8")
    assert not spill_path.exists()  # the database was up: nothing to replay
    [row] = [json.loads(line) for line in quarantine_path.read_text().splitlines()]
    assert row["event"]["request_id"] == "r7" and "surrogate" in row["reason"]
    assert logger.stats() == {"pending": 0, "stored": 19, "failed": 1}


def test_an_unavailable_database_spills_and_replay_stores_everything_once(store, tmp_path):
    spill_path, quarantine_path = tmp_path / "spill.jsonl", tmp_path / "quarantine.jsonl"
    good_engine = store.engine
    unavailable(store)
    logger = EventLogger(store, max_delay_s=0.05, retries=1, spill_path=spill_path, quarantine_path=quarantine_path)

    async def run():
        for i in range(10):
            logger.log(event(f"s{i}", user_key="\udc00" if i == 3 else "u"))
        await logger.close()

    asyncio.run(run())
    assert len(spill_path.read_text().splitlines()) == 10  # all of them, the bad one too: nothing learned
    store.engine = good_engine
    store.add_impressions([event("s0")])  # one already stored (replays are idempotent)
    with spill_path.open("a") as f:
        f.write('{"request_id": "torn", "domain": "d", "vari')  # a line cut by a crash mid-write
    result = spill.replay(store, spill_path, quarantine_path)
    assert (result.stored, result.duplicates, result.quarantined, result.remaining) == (8, 1, 2, 0)
    assert store.count_impressions() == 9 and not store.has_impression("s3")
    reasons = [json.loads(line)["reason"] for line in quarantine_path.read_text().splitlines()]
    assert len(reasons) == 2 and any("unreadable spill line" in r for r in reasons)
    assert not spill_path.exists() and spill_path.with_name("spill.jsonl.replayed").exists()
    assert spill.replay(store, spill_path, quarantine_path).stored == 0  # nothing left: a no-op


def test_replay_keeps_what_it_could_not_store_for_the_next_replay(store, tmp_path):
    spill_path, quarantine_path = tmp_path / "spill.jsonl", tmp_path / "quarantine.jsonl"
    spill.append(spill_path, [event(f"k{i}") for i in range(5)])
    good_engine = store.engine
    unavailable(store)
    with pytest.raises(StoreUnavailable) as err:
        spill.replay(store, spill_path, quarantine_path)
    assert err.value.result.remaining == 5
    spill.append(spill_path, [event("later")])  # serving spills again meanwhile: a fresh file
    store.engine = good_engine
    result = spill.replay(store, spill_path, quarantine_path)
    assert result.stored == 6 and store.count_impressions() == 6 and not quarantine_path.exists()


def test_cli_replay(tmp_path, monkeypatch):
    monkeypatch.setenv("RERANKER_HOME", str(tmp_path))
    monkeypatch.delenv("RERANKER_DB_URL", raising=False)
    from state.settings import Settings

    settings = Settings()
    spill.append(settings.spill_path, [event("c1"), event("c2", user_key="\ud800"), event("c3")])
    runner = CliRunner()
    r = runner.invoke(cli, ["events", "replay"])
    assert r.exit_code == 0, r.output
    assert "stored 2 new" in r.output and "1 quarantined" in r.output
    store = Store(settings.database_url)
    try:
        assert store.count_impressions() == 2
    finally:
        store.close()
    assert "nothing to replay" in runner.invoke(cli, ["events", "replay"]).output
    spill.append(settings.spill_path, [event("c4")])
    r = runner.invoke(cli, ["events", "replay", "--db-url", closed_port_url()])
    assert r.exit_code == 1 and "unavailable" in r.output
    assert settings.spill_path.exists()  # untouched for the next try
