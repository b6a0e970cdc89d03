"""Training job records: one JSON file per job under <home>/jobs, replaced atomically.

Training writes them (stage, progress, metrics, gates); serving only reads them and sets
`cancel_requested`, which the running job polls. Imports neither training nor torch.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

from state.atomic import write_json_atomic

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "failed", "cancelled")
JOB_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


class JobNotFound(KeyError):
    pass


class JobCancelled(Exception):
    """Raised inside a running job when its record says cancel was requested."""


class JobStore:
    def __init__(self, home: Path | str):
        self.dir = Path(home) / "jobs"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, job_id: str) -> Path:
        if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
            raise JobNotFound(job_id)
        return self.dir / f"{job_id}.json"

    def _write(self, record: dict[str, Any]) -> None:
        write_json_atomic(self._path(record["id"]), record)

    def create(self, domain: str, kind: str, config: dict[str, Any], prefix: str = "train") -> dict[str, Any]:
        now = time.time()
        # the id must match JOB_ID_RE whatever the domain id: no "_", and short enough
        record = {"id": f"{prefix}-{domain.replace('_', '-')[:40]}-{uuid.uuid4().hex[:12]}", "domain": domain, "kind": kind,
                  "config": config, "status": "queued", "stage": "queued",
                  "progress": {"done": 0, "total": 0}, "metrics": {}, "gates": [], "sources": {}, "loss": [],
                  "version": None, "error": None, "cancel_requested": False, "ray_job_id": None,
                  "created": now, "updated": now, "finished": None}
        self._write(record)
        return record

    def get(self, job_id: str) -> dict[str, Any]:
        path = self._path(job_id)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise JobNotFound(job_id) from None

    def list(self, domain: str | None = None) -> list[dict[str, Any]]:
        out = []
        for p in self.dir.glob("*.json"):
            try:
                rec = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if domain is None or rec.get("domain") == domain:
                out.append(rec)
        return sorted(out, key=lambda r: r["created"], reverse=True)

    def update(self, job_id: str, **fields: Any) -> dict[str, Any]:
        """Merge fields into the record. A terminal status is final: later updates are ignored."""
        record = self.get(job_id)
        if record["status"] in TERMINAL:
            return record
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"unknown job status {fields['status']!r}")
        record.update(fields, updated=time.time())
        if record["status"] in TERMINAL:
            record["finished"] = record["updated"]
        self._write(record)
        return record

    def request_cancel(self, job_id: str) -> dict[str, Any]:
        record = self.get(job_id)
        if record["status"] in TERMINAL:
            return record
        if record["status"] == "queued" and not record.get("ray_job_id"):
            return self.update(job_id, cancel_requested=True, status="cancelled", error="cancelled before start")
        return self.update(job_id, cancel_requested=True)

    def check_cancel(self, job_id: str) -> None:
        if self.get(job_id).get("cancel_requested"):
            raise JobCancelled(job_id)
