"""RAGAS evaluation JSONL -> examples.

Fields (either spelling): user_input|question, retrieved_contexts|contexts, reference|ground_truth,
optional reference_contexts. Positives: the retrieved contexts listed in reference_contexts when that
field is present; otherwise contexts that support the reference by the overlap rule below. The other
retrieved contexts are negatives.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from training.examples import Example, SourceError, iter_jsonl, require_text

TOKEN = re.compile(r"\w+", re.UNICODE)
# Overlap rule: a context supports the reference when it contains at least this share of the
# reference's distinct content words (len > 3, so stop-word-like tokens do not count).
MIN_OVERLAP = 0.5


def _words(text: str) -> set[str]:
    return {w for w in TOKEN.findall(text.lower()) if len(w) > 3}


def supports(context: str, reference: str, min_overlap: float = MIN_OVERLAP) -> bool:
    ref = _words(reference)
    return bool(ref) and len(ref & _words(context)) / len(ref) >= min_overlap


def _pick(row: dict, *names: str) -> object:
    for n in names:
        if n in row and row[n] is not None:
            return row[n]
    return None


def load_ragas(path: str | Path, min_overlap: float = MIN_OVERLAP) -> tuple[list[Example], dict]:
    path = Path(path)
    out: list[Example] = []
    rows = 0
    for n, row in iter_jsonl(path):
        where = f"{path}:{n}"
        query = require_text(_pick(row, "user_input", "question"), "user_input/question", where)
        contexts = _pick(row, "retrieved_contexts", "contexts")
        if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
            raise SourceError(f"{where}: retrieved_contexts/contexts must be a list of strings")
        reference = _pick(row, "reference", "ground_truth")
        ref_ctx = row.get("reference_contexts")
        if ref_ctx is not None and (not isinstance(ref_ctx, list) or not all(isinstance(c, str) for c in ref_ctx)):
            raise SourceError(f"{where}: reference_contexts must be a list of strings")
        if ref_ctx is None and not isinstance(reference, str):
            raise SourceError(f"{where}: needs reference/ground_truth or reference_contexts to label contexts")
        qid = "ragas-" + hashlib.sha256(query.encode()).hexdigest()[:16]
        gold = {c.strip() for c in ref_ctx} if ref_ctx is not None else set()
        for c in contexts:
            if not c.strip():
                continue
            pos = c.strip() in gold if ref_ctx is not None else supports(c, reference, min_overlap)
            out.append(Example(qid, query, c, 1.0 if pos else 0.0, "ragas"))
        rows += 1
    pos = sum(1 for e in out if e.label > 0)
    return out, {"rows": rows, "pairs": len(out), "positives": pos, "negatives": len(out) - pos}
