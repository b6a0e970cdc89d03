"""Training data uploaded for a domain: one directory per upload under <home>/uploads/<domain>/.

    <domain>/<upload id>/meta.json    {id, domain, kind, filename, size, created, stats, path}
    <domain>/<upload id>/<file>       the RAGAS JSONL or labels CSV/JSONL file, or beir/ (the unzipped dir)
    <domain>/.staging/<upload id>/    a file being received and checked; renamed into place when valid

An upload appears whole (after its check passed) or not at all. Ids are validated before they touch a path.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from state.atomic import write_json_atomic
from state.ids import validate_domain

Kind = Literal["ragas", "labels", "beir"]
KINDS: tuple[str, ...] = ("ragas", "labels", "beir")
UPLOAD_ID_RE = re.compile(r"^u-[0-9a-f]{12}$")
META = "meta.json"


class UploadNotFound(KeyError):
    pass


def safe_filename(name: str, default: str = "upload") -> str:
    """The client's file name reduced to [A-Za-z0-9._-] (no directories), for display and storage."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name or "").name).strip("._")[:100]
    return base or default


class UploadStore:
    def __init__(self, home: Path | str):
        self.root = Path(home) / "uploads"

    def domain_dir(self, domain: str) -> Path:
        return self.root / validate_domain(domain)

    def _dir(self, domain: str, upload_id: str) -> Path:
        if not isinstance(upload_id, str) or not UPLOAD_ID_RE.fullmatch(upload_id):
            raise UploadNotFound(upload_id)
        return self.domain_dir(domain) / upload_id

    def stage(self, domain: str) -> tuple[str, Path]:
        """(new upload id, a private directory to receive and check it in)."""
        upload_id = f"u-{uuid.uuid4().hex[:12]}"
        d = self.domain_dir(domain) / ".staging" / upload_id
        d.mkdir(parents=True)
        return upload_id, d

    def commit(self, domain: str, upload_id: str, staged: Path, kind: str, filename: str, size: int,
               path: str, stats: dict[str, Any]) -> dict[str, Any]:
        """Seal a checked staging dir as the upload; `path` is the data's path inside it."""
        meta = {"id": upload_id, "domain": domain, "kind": kind, "filename": filename, "size": size,
                "created": time.time(), "stats": stats, "path": path}
        write_json_atomic(staged / META, meta)
        os.rename(staged, self._dir(domain, upload_id))
        return meta

    def discard(self, staged: Path) -> None:
        shutil.rmtree(staged, ignore_errors=True)

    def get(self, domain: str, upload_id: str) -> dict[str, Any]:
        try:
            return json.loads((self._dir(domain, upload_id) / META).read_text())
        except FileNotFoundError:
            raise UploadNotFound(upload_id) from None

    def data_path(self, domain: str, upload_id: str) -> Path:
        """Where training reads the upload: the file, or the BEIR directory."""
        return self._dir(domain, upload_id) / self.get(domain, upload_id)["path"]

    def list(self, domain: str) -> list[dict[str, Any]]:
        d = self.domain_dir(domain)
        out = []
        for p in d.glob("u-*/" + META) if d.is_dir() else []:
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, json.JSONDecodeError):
                continue
        return sorted(out, key=lambda m: m["created"], reverse=True)

    def delete(self, domain: str, upload_id: str) -> None:
        d = self._dir(domain, upload_id)
        if not (d / META).is_file():
            raise UploadNotFound(upload_id)
        shutil.rmtree(d)
