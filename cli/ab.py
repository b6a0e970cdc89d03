"""`reranker ab D`: the A/B report of a domain, read straight from the event store."""
from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("ab")
    def ab(domain: str = typer.Argument(..., help="Domain id, e.g. legal."),
           as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
           db_url: str = typer.Option(None, "--db-url", help="Store URL (default: RERANKER_DB_URL or "
                                                             "the SQLite file in RERANKER_HOME)."),
           since: float = typer.Option(None, "--since", help="Only impressions at/after this unix time.")):
        """Per-arm impressions, clicks, CTR, MRR, latency; CTR difference, CI, p-value, verdict."""
        from state.ab_report import ab_report, format_report
        from state.ids import InvalidId, validate_domain
        from state.settings import Settings
        from state.store import Store
        try:
            validate_domain(domain)
        except InvalidId as e:
            raise typer.BadParameter(str(e), param_hint="DOMAIN")
        settings = Settings()
        store = Store(db_url or settings.database_url)
        try:
            report = ab_report(store, domain, since=since, spill_path=settings.spill_path)
        finally:
            store.close()
        typer.echo(json.dumps(report, indent=2) if as_json else format_report(report))
