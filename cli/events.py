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
    """Store every spilled event (idempotent); the file is renamed *.replayed afterwards.

    Row by row where needed: an unreadable line or an event the database refuses goes to
    $RERANKER_HOME/events-quarantine.jsonl with the reason, and the rest are stored. If the database
    is unavailable, what is not stored stays for the next replay and the exit status is 1."""
    from state import spill
    from state.settings import Settings
    from state.store import Store, StoreUnavailable

    settings = Settings()
    path = path or settings.spill_path
    leftover = path.with_name(path.name + spill.REPLAYING)
    if not path.exists() and not leftover.exists():
        typer.echo(f"nothing to replay: {path} does not exist")
        return
    try:
        store = Store(db_url or settings.database_url)
    except Exception as e:  # noqa: BLE001 - cannot connect: nothing was touched
        typer.echo(f"the database is unavailable: {e}; nothing replayed", err=True)
        raise typer.Exit(1) from None
    try:
        result = spill.replay(store, path, settings.quarantine_path)
    except StoreUnavailable as e:
        typer.echo(f"the database is unavailable ({e}); {getattr(e, 'result', '')}", err=True)
        raise typer.Exit(1) from None
    finally:
        store.close()
    typer.echo(f"{result} (from {path})")
    if result.quarantined:
        typer.echo(f"quarantined events and lines, with the reason: {settings.quarantine_path}")


def register(app: typer.Typer) -> None:
    app.add_typer(events_app, name="events")
