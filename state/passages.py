"""Passages registered ahead of time for a domain (POST /v1/domains/{d}/passages): one JSONL file per
domain, <home>/passages/<domain>/passages.jsonl, lines {"id": str | null, "text": str}, each text once.

They are what a promote embeds with the new version before it takes traffic, beside the domain's most
frequently shown passages; their embeddings live in the node's store (scoring/embedding_store.py).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from state.db import DOC_ID_LEN
from state.ids import validate_domain

if TYPE_CHECKING:
    from state.settings import Settings
    from state.store import Store

FILE = "passages.jsonl"


class InvalidPassages(ValueError):
    """An upload line that is not {"text": non-empty string, "id"?: string}; the message names the line."""


def parse_jsonl(path: Path, max_passages: int, max_chars: int, max_id_chars: int = DOC_ID_LEN
                ) -> list[tuple[str | None, str]]:
    """(id, text) per line of a JSONL file (blank lines skipped); InvalidPassages naming the first bad line."""
    out: list[tuple[str | None, str]] = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise InvalidPassages(f"line {n}: not JSON: {e}") from None
            if not isinstance(obj, dict):
                raise InvalidPassages(f"line {n}: must be an object {{\"id\"?: string, \"text\": string}}")
            if unknown := sorted(set(obj) - {"id", "text"}):
                raise InvalidPassages(f"line {n}: unknown fields {unknown} (only id and text)")
            text, doc_id = obj.get("text"), obj.get("id")
            if not isinstance(text, str) or not text.strip():
                raise InvalidPassages(f"line {n}: text must be a non-empty string")
            if len(text) > max_chars:
                raise InvalidPassages(f"line {n}: text has {len(text)} characters; at most {max_chars}")
            if doc_id is not None and (not isinstance(doc_id, str) or len(doc_id) > max_id_chars):
                raise InvalidPassages(f"line {n}: id must be a string of at most {max_id_chars} characters")
            for field, value in (("text", text), ("id", doc_id or "")):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise InvalidPassages(f"line {n}: {field} holds a lone surrogate escape") from None
            if len(out) == max_passages:
                raise InvalidPassages(f"more than {max_passages} passages in one upload")
            out.append((doc_id, text))
    if not out:
        raise InvalidPassages("no passages: the file holds no JSON lines")
    return out


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class PassageStore:
    def __init__(self, home: Path | str):
        self.root = Path(home) / "passages"

    def _file(self, domain: str) -> Path:
        return self.root / validate_domain(domain) / FILE

    def add(self, domain: str, passages: list[tuple[str | None, str]]) -> tuple[int, int]:
        """Append the texts not registered yet; (added, already registered). Locked: two ingress replicas
        may take uploads for one domain at once."""
        path = self._file(domain)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            known = {_hash(json.loads(line)["text"]) for line in f if line.strip()}
            added = 0
            for doc_id, text in passages:
                h = _hash(text)
                if h not in known:
                    known.add(h)
                    f.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
                    added += 1
            f.flush()
        return added, len(passages) - added

    def texts(self, domain: str) -> Iterator[str]:
        path = self._file(domain)
        if not path.is_file():
            return
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)["text"]

    def count(self, domain: str) -> int:
        return sum(1 for _ in self.texts(domain))


def texts_to_warm(store: "Store", settings: "Settings", domain: str) -> list[str]:
    """What a new version of the domain embeds first: its most frequently shown passages (up to
    RERANKER_PROMOTE_WARM_PASSAGES), then its registered ones."""
    seen = store.frequent_passages(domain, settings.promote_warm_passages)
    return list(dict.fromkeys(seen + list(PassageStore(settings.home).texts(domain))))
