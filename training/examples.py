"""The one common form every training source is turned into."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


# Sources whose labels are grades 1-5 (1 = not relevant); every other source labels 0/1.
GRADED_SOURCES = ("labels", "expert_labels")


class SourceError(ValueError):
    """Bad training input. The message names the file and line so the user can fix it."""


@dataclass
class Example:
    """One labelled (query, passage) pair. label: 0/1 for binary sources, 1-5 graded for expert labels."""

    query_id: str  # groups pairs of one query, so splits never leak a query across train/dev
    query: str
    passage: str
    label: float
    source: str
    doc_id: str | None = None
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def require_text(value: object, what: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SourceError(f"{where}: {what} must be a non-empty string, got {value!r}")
    return value


def iter_jsonl(path: Path):
    """(line number, object) for each non-blank line; a bad line is a SourceError naming file:line."""
    if not path.is_file():
        raise SourceError(f"{path}: file not found")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SourceError(f"{path}:{n}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise SourceError(f"{path}:{n}: expected a JSON object")
            yield n, row

