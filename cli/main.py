"""The `reranker` command. Each topic registers its commands from its own module."""
from __future__ import annotations

import typer

from cli import ab, events, models, train

app = typer.Typer(help="Domain reranker service: models, training, A/B.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
for module in (models, train, ab, events):
    module.register(app)
ab.register_challenger(app)

if __name__ == "__main__":
    app()
