"""The spill file: impression events the store refused, one JSON object per line, replayable.

The serving event logger appends here rather than drop anything; `reranker events replay` (or
`replay()`) stores them once the database is healthy again. Replaying is idempotent.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Iterable

from state.store import ImpressionEvent, Store

_lock = threading.Lock()  # one process may spill from several threads


def append(path: Path, events: Iterable[ImpressionEvent]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock, open(path, "a") as f:
        for e in events:
            f.write(json.dumps(e.to_dict()) + "\n")


def replay(store: Store, path: Path | str) -> int:
    """Store the spilled events (request ids already stored are skipped); returns how many were new.
    The file is renamed to *.replayed afterwards so a second replay does not re-read it."""
    path = Path(path)
    if not path.exists():
        return 0
    events = [ImpressionEvent.from_dict(json.loads(line)) for line in path.read_text().splitlines() if line]
    n = store.add_impressions(events)
    path.rename(path.with_suffix(path.suffix + ".replayed"))
    return n
