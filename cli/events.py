"""`reranker events replay`: store the impression events that serving spilled when the database refused them."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

events_app = typer.Typer(help="The impression event log.", no_args_is_help=True)


@events_app.command("replay")
def replay(path: Optional[Path] = typer.Option(None, "--file", help="Spill file (default: "
                                               "$RERANKER_HOME/events-failed.jsonl)."),
           db_url: Optional[str] = typer.Option(None, "--db-url", help="Store URL (default: RERANKER_DB_URL or "
                                                "the SQLite file in RERANKER_HOME).")) -> None:
    """Store every spilled event (idempotent); the file is renamed *.replayed afterwards."""
    from state import spill
    from state.settings import Settings
    from state.store import Store

    settings = Settings()
    path = path or settings.spill_path
    if not path.exists():
        typer.echo(f"nothing to replay: {path} does not exist")
        return
    store = Store(db_url or settings.database_url)
    try:
        n = spill.replay(store, path)
    finally:
        store.close()
    typer.echo(f"stored {n} new impression events from {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(events_app, name="events")
