"""Expert labels: (query, document, relevance 1-5), JSONL or CSV. Kept graded (LambdaLoss)."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Iterable

from training.examples import Example, SourceError, iter_jsonl, require_text

FIELDS = ("query", "document", "relevance")


def _relevance(value: object, where: str) -> float:
    try:
        rel = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SourceError(f"{where}: relevance {value!r} is not a number 1-5") from None
    if rel != int(rel) or not 1 <= rel <= 5:
        raise SourceError(f"{where}: relevance {value!r} must be an integer 1-5")
    return rel


def _rows(path: Path):
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in FIELDS if c not in (reader.fieldnames or [])]
            if missing:
                raise SourceError(f"{path}:1: CSV header lacks column(s) {', '.join(missing)}")
            for row in reader:
                yield reader.line_num, row
        return
    yield from iter_jsonl(path)


def load_labels(path: str | Path) -> tuple[list[Example], dict]:
    """Relevance 1-5 is kept as the label; 1 means 'not relevant' for binary consumers (label - 1 > 0)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: file not found")
    return examples_from_rows((f"{path}:{n}", row) for n, row in _rows(path))


def examples_from_rows(rows: Iterable[tuple[str, dict]], source: str = "labels") -> tuple[list[Example], dict]:
    """(where, {query, document, relevance, doc_id?}) rows -> examples; `where` names a bad row."""
    out = []
    for where, row in rows:
        query = require_text(row.get("query"), "query", where)
        doc = require_text(row.get("document"), "document", where)
        rel = _relevance(row.get("relevance"), where)
        qid = "label-" + hashlib.sha256(query.encode()).hexdigest()[:16]
        out.append(Example(qid, query, doc, rel, source, row.get("doc_id") or None))
    hist = {str(r): sum(1 for e in out if e.label == r) for r in range(1, 6)}
    return out, {"pairs": len(out), "queries": len({e.query_id for e in out}), "relevance": hist}
