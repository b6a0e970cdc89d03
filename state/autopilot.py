"""Autopilot settings: the global kill switch and each domain's switch and triggers, in one JSON file
(<home>/autopilot.json, replaced atomically under an flock). serving/autopilot.py acts on them."""
from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from state import spill
from state.atomic import write_json_atomic

# A domain's autopilot when nobody tuned it: off; retrain after 200 new clicked queries or 50 new grades.
DOMAIN_DEFAULTS: dict[str, Any] = {"enabled": False, "min_clicked_queries": 200, "min_expert_labels": 50,
                                   "window_start_hour": None, "window_end_hour": None, "adopted_job": None}


class AutopilotConfig:
    def __init__(self, home: Path | str):
        self.path = Path(home) / "autopilot.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            data = {}
        return {"killed": bool(data.get("killed", False)), "domains": dict(data.get("domains") or {})}

    @contextmanager
    def _edit(self) -> Iterator[dict[str, Any]]:
        with open(self.path.with_name(self.path.name + ".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            yield data
            write_json_atomic(self.path, data)

    def killed(self) -> bool:
        return self._read()["killed"]

    def set_killed(self, killed: bool) -> None:
        with self._edit() as data:
            data["killed"] = bool(killed)

    def domain(self, domain: str) -> dict[str, Any]:
        return {**DOMAIN_DEFAULTS, **self._read()["domains"].get(domain, {})}

    def enabled_domains(self) -> list[str]:
        return sorted(d for d, c in self._read()["domains"].items() if c.get("enabled"))

    def update(self, domain: str, **fields: Any) -> dict[str, Any]:
        """Merge `fields` (keys of DOMAIN_DEFAULTS) into the domain's settings; returns them all."""
        unknown = set(fields) - set(DOMAIN_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown autopilot settings: {', '.join(sorted(unknown))}")
        with self._edit() as data:
            data["domains"][domain] = {**DOMAIN_DEFAULTS, **data["domains"].get(domain, {}), **fields}
            return dict(data["domains"][domain])


def spill_backlog(settings: Any) -> bool:
    """Impressions wait in the spill file (state/spill.py) or in a replay of it: automatic actions and
    decisions wait too, their data would be incomplete."""
    return spill.backlog(settings.spill_path) > 0
