"""A BEIR directory: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from training.examples import Example, SourceError, iter_jsonl, require_text


@dataclass
class BeirData:
    name: str
    corpus: dict[str, str]  # doc id -> "title text"
    queries: dict[str, str]  # query id -> text (only those with qrels in the split)
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> relevance


def load_beir(directory: str | Path, split: str = "train") -> BeirData:
    d = Path(directory)
    corpus: dict[str, str] = {}
    for n, row in iter_jsonl(d / "corpus.jsonl"):
        if "_id" not in row:
            raise SourceError(f"{d / 'corpus.jsonl'}:{n}: missing _id")
        text = row.get("text") or ""
        title = row.get("title") or ""
        if not isinstance(text, str) or not isinstance(title, str) or not (text or title):
            raise SourceError(f"{d / 'corpus.jsonl'}:{n}: title/text must be strings, not both empty")
        corpus[str(row["_id"])] = f"{title} {text}".strip()
    queries: dict[str, str] = {}
    for n, row in iter_jsonl(d / "queries.jsonl"):
        if "_id" not in row:
            raise SourceError(f"{d / 'queries.jsonl'}:{n}: missing _id")
        queries[str(row["_id"])] = require_text(row.get("text"), "text", f"{d / 'queries.jsonl'}:{n}")
    qpath = d / "qrels" / f"{split}.tsv"
    if not qpath.is_file():
        raise SourceError(f"{qpath}: file not found (split {split!r})")
    qrels: dict[str, dict[str, int]] = {}
    with open(qpath, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not row or (n == 1 and row[0] == "query-id"):
                continue
            if len(row) != 3:
                raise SourceError(f"{qpath}:{n}: expected 3 tab-separated fields, got {len(row)}")
            qid, did, score = row
            try:
                rel = int(score)
            except ValueError:
                raise SourceError(f"{qpath}:{n}: score {score!r} is not an integer") from None
            if qid not in queries:
                raise SourceError(f"{qpath}:{n}: query id {qid!r} not in queries.jsonl")
            if did not in corpus:
                raise SourceError(f"{qpath}:{n}: corpus id {did!r} not in corpus.jsonl")
            qrels.setdefault(qid, {})[did] = rel
    return BeirData(d.name, corpus, {q: queries[q] for q in qrels}, qrels)


def beir_examples(data: BeirData) -> list[Example]:
    """Positives from qrels (relevance > 0, the grade kept: NFCorpus' 2 ranks above its 1). Negatives
    come from hard-negative mining."""
    return [Example(qid, data.queries[qid], data.corpus[did], float(rel), "beir", did)
            for qid, docs in data.qrels.items() for did, rel in docs.items() if rel > 0]


def query_groups(directory: str | Path) -> dict[str, str]:
    """query id -> group, from the BEIR directory's `extra/queries_meta.tsv` when it has `query-id` and
    `group` columns (covidfaq_de: an official FAQ question and its colloquial paraphrases share a group);
    {} otherwise. Held-out splits keep a group on one side (training/splits.py)."""
    meta = Path(directory) / "extra" / "queries_meta.tsv"
    if not meta.is_file():
        return {}
    with open(meta, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows or "query-id" not in rows[0] or "group" not in rows[0]:
        return {}
    q, g = rows[0].index("query-id"), rows[0].index("group")
    return {r[q]: r[g] for r in rows[1:] if len(r) > max(q, g) and r[g]}
