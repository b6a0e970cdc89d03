"""The spill file: impression events the store could not take, one JSON object per line, replayable.

The serving event logger appends here rather than drop anything while the database is unavailable;
each ingress replica replays the file in the background once the store answers again
(serving/replayer.py), and `reranker events replay` (or `replay()`) does it by hand. One replay runs at a
time (an flock beside the file, so across the replicas and CLI runs that share it). Replaying is
idempotent (an impression's request id is its primary key, inserted with ON CONFLICT DO NOTHING, so
one replayed twice, or while a replica retries it, is stored once) and row by row where needed: a line
that cannot be read or an event the database refuses goes to the quarantine file (with the reason)
and never blocks the rest. Quarantined events are kept for a person to look at; nothing replays them
automatically. `backlog()` says how many events wait: what the A/B report and /readyz show.
"""
from __future__ import annotations

import fcntl
import json
import os
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from state.store import ImpressionEvent, Store, StoreUnavailable

_lock = threading.Lock()  # one process may spill from several threads
REPLAYING = ".replaying"  # suffix of a spill file being replayed (a crashed replay resumes from it)
REPLAYED = ".replayed"
LOCK = ".lock"  # suffix of the file whose flock one replay holds


@dataclass
class ReplayResult:
    stored: int = 0  # new impressions written
    duplicates: int = 0  # already stored (an earlier replay, or the logger's own retry)
    quarantined: int = 0  # unreadable lines and events the database refused
    remaining: int = 0  # left in the spill file because the database became unavailable

    def __str__(self) -> str:
        return (f"stored {self.stored} new impression events, {self.duplicates} already stored, "
                f"{self.quarantined} quarantined, {self.remaining} left for the next replay")


def _append_lines(path: Path, lines: Iterable[str]) -> None:
    """Append under an flock, to the file that is at `path` now: a replay may have renamed the one
    we opened, and lines written there after it was read would be lost."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock:
        while True:
            f = open(path, "a", encoding="utf-8")
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                same = os.path.exists(path) and os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
            except OSError:
                same = False
            if same:
                break
            f.close()
        with f:
            for line in lines:
                f.write(line + "\n")
            f.flush()


def append(path: Path, events: Iterable[ImpressionEvent]) -> None:
    # ensure_ascii (the default): any str, even one holding a lone surrogate, becomes a readable line
    _append_lines(Path(path), (json.dumps(e.to_dict()) for e in events))


def quarantine(path: Path, rows: Iterable[tuple[dict | str, str]]) -> None:
    """Rows the store refused or that cannot be read: {"reason", "event"} or {"reason", "line"}."""
    _append_lines(Path(path), (json.dumps({"reason": reason[:1000], "event" if isinstance(row, dict) else "line": row})
                               for row, reason in rows))


def _take(path: Path) -> Path | None:
    """Rename the spill file aside (under its lock) so new spills start a fresh file; returns the
    renamed file, or an earlier replay's leftover, or None when there is nothing to replay."""
    work = path.with_name(path.name + REPLAYING)
    if work.exists():
        return work
    if not path.exists():
        return None
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        os.rename(path, work)
    return work


def _read(work: Path) -> Iterator[tuple[str, ImpressionEvent | None, str]]:
    """(line, event or None, why not) per non-empty line; never raises on a bad line."""
    with open(work, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", errors="backslashreplace").rstrip("\n")
            if not line.strip():
                continue
            try:
                yield line, ImpressionEvent.from_dict(json.loads(line)), ""
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                yield line, None, f"unreadable spill line: {type(e).__name__}: {e}"


@contextmanager
def _one_replay(path: Path, wait: bool) -> Iterator[bool]:
    """The replay lock: True once held (released on exit); False at once if `wait` is off and another
    process (a replica, a CLI run) is replaying."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + LOCK), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def replay(store: Store, path: Path | str, quarantine_path: Path | str, batch: int = 500,
           wait: bool = True) -> ReplayResult | None:
    """Store the spilled events. The file is renamed *.replayed afterwards so a second replay does
    not re-read it. If the database becomes unavailable midway, the events not yet stored stay
    in the spill file for the next replay and StoreUnavailable is raised (with `.result`).
    One replay at a time: this one waits for another's end, or with `wait=False` returns None."""
    path, quarantine_path = Path(path), Path(quarantine_path)
    with _one_replay(path, wait) as mine:
        return _replay(store, path, quarantine_path, batch) if mine else None


def _replay(store: Store, path: Path, quarantine_path: Path, batch: int) -> ReplayResult:
    result = ReplayResult()
    for _ in range(2):  # a crashed replay's leftover first, then the current spill file
        work = _take(path)
        if work is None:
            break
        pending: list[tuple[str, ImpressionEvent]] = []
        bad: list[tuple[dict | str, str]] = []
        lines = _read(work)
        for line, event, why in lines:
            if event is None:
                bad.append((line, why))
            else:
                pending.append((line, event))
            if len(pending) >= batch:
                _store(store, pending, result, bad, work, lines, quarantine_path)
                pending = []
        _store(store, pending, result, bad, work, lines, quarantine_path)
        if bad:
            quarantine(quarantine_path, bad)
            result.quarantined += len(bad)
        os.replace(work, path.with_name(path.name + REPLAYED))
    return result


def _store(store: Store, pending: list[tuple[str, ImpressionEvent]], result: ReplayResult,
           bad: list[tuple[dict | str, str]], work: Path, rest: Iterator, quarantine_path: Path) -> None:
    if not pending:
        return
    try:
        new, rejected = store.add_impressions_each([e for _, e in pending])
    except StoreUnavailable as e:
        # keep what is not stored yet (this batch on) for the next replay; bad lines go to quarantine
        left = [line for line, _ in pending] + [line for line, _, _ in rest]
        tmp = work.with_name(work.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in left), encoding="utf-8")
        os.replace(tmp, work)
        if bad:
            quarantine(quarantine_path, bad)
            result.quarantined += len(bad)
        result.remaining = len(left)
        e.result = result  # type: ignore[attr-defined]
        raise
    bad.extend((ev.to_dict(), reason) for ev, reason in rejected)
    result.stored += new
    result.duplicates += len(pending) - len(rejected) - new


# ---- the backlog ---------------------------------------------------------------------------------
# Per file: (inode, bytes counted, events per domain). Spill files only grow between renames, so each
# call reads only what was appended since the last one; a renamed or rewritten file is counted afresh.
_counted: dict[str, tuple[int, int, Counter]] = {}
_counted_lock = threading.Lock()


def _domain_of(raw: bytes) -> str | None:
    try:
        return json.loads(raw)["domain"]
    except (ValueError, TypeError, KeyError):
        return None  # an unreadable line: still waiting (replay quarantines it)


def _events_by_domain(path: Path) -> Counter:
    key = str(path)
    with _counted_lock:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            _counted.pop(key, None)
            return Counter()
        ino, done, counts = _counted.get(key, (-1, 0, Counter()))
        if ino != st.st_ino or st.st_size < done:
            done, counts = 0, Counter()
        if st.st_size > done:
            with open(path, "rb") as f:
                f.seek(done)
                for raw in f:
                    if not raw.endswith(b"\n"):
                        break  # being written: counted once complete
                    done += len(raw)
                    if raw.strip():
                        counts[_domain_of(raw)] += 1
        _counted[key] = (st.st_ino, done, counts)
        return Counter(counts)


def backlog(path: Path | str, domain: str | None = None) -> int:
    """Impression events spilled and not replayed yet (the spill file and an unfinished replay's
    leftover), of one domain or all. What an automatic decision on A/B figures must wait for: while
    it is above 0, the store lacks impressions that were answered."""
    path = Path(path)
    total = Counter()
    for p in (path, path.with_name(path.name + REPLAYING)):
        total.update(_events_by_domain(p))
    return total.total() if domain is None else total[domain]
