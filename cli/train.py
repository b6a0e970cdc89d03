"""`reranker` subcommands (placeholder until built)."""
import typer


def register(app: typer.Typer) -> None:
    pass
