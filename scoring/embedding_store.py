"""A persistent passage-embedding store: one SQLite file (WAL) per node, shared by the pool replicas
(separate processes) that run there, kept across restarts, bounded in bytes.

Why SQLite (measured, benchmarks/embedding_store.py, 100k one-window entries of 384 fp16): 50 random keys
read in 0.32 ms (LMDB 0.06 ms: both are noise beside one window of inference, ~11 ms), 83 MB on disk
(LMDB 117 MB), eviction is one SQL statement (LMDB has none), `PRAGMA quick_check` detects a damaged file
in 0.09 s, and it is in the standard library (LMDB would be a new dependency with a fixed map size).

Rows: key (16 bytes: scoring.cache.entry_key of the version, window settings and text), the version's
label (for stats), dim, cut, the window embeddings as fp16 bytes, last use (unix seconds). Eviction drops
the least recently used rows when the live pages would pass `max_bytes`; freed pages are reused, so the
file stays near its bound.

A store failure never fails a request: every error is logged and answered as a miss (get) or dropped
(put); a damaged file (`DatabaseError` other than busy/locked, or a failed quick_check on open) is moved
aside and rebuilt empty, under a file lock so two replicas do not rebuild it twice. Writes run on a
background thread, off the request's path.
"""
from __future__ import annotations

import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

log = logging.getLogger(__name__)

Entry = tuple[np.ndarray, bool]  # (window embeddings: n_windows x dim, fp16; the document was cut at its cap)
SCHEMA_VERSION = 1
TOUCH_AFTER_S = 60.0  # a hit refreshes its row's last use at most this often: reads stay reads
ROW_OVERHEAD = 64  # bytes per row beside the embedding (key, index entry, row header), for the bound
EVICT_TO = 0.9  # eviction frees down to this share of the bound, so it does not run on every put
MAX_QUEUED = 1024  # write batches waiting for the writer thread; past it new ones are dropped (memory)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (key BLOB PRIMARY KEY, version TEXT NOT NULL, dim INTEGER NOT NULL,
    cut INTEGER NOT NULL, emb BLOB NOT NULL, used REAL NOT NULL);
CREATE INDEX IF NOT EXISTS embeddings_used ON embeddings (used);
"""


class EmbeddingStore:
    def __init__(self, path: Path | str, max_bytes: int, busy_timeout_ms: int = 2000):
        self.path, self.max_bytes, self.busy_timeout_ms = Path(path), max_bytes, busy_timeout_ms
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rebuilt = self.errors = self.hits = self.misses = self.dropped = 0
        self._read_lock = threading.Lock()
        self._ino: int | None = None
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None  # used by the writer thread only
        self._open_checked()
        self._queue: queue.Queue = queue.Queue(MAX_QUEUED)
        self._thread = threading.Thread(target=self._write_loop, name="embedding-store-writer", daemon=True)
        self._thread.start()

    # -- opening, checking, rebuilding ----------------------------------------------------------
    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Across the replicas of the node: one of them checks or rebuilds the file at a time."""
        with open(self.path.with_name(self.path.name + ".lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _connect(self) -> sqlite3.Connection:
        c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                            timeout=self.busy_timeout_ms / 1000)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")  # a crash may lose the last writes, never the file
        c.execute("PRAGMA journal_size_limit=8388608")
        return c

    def _check(self) -> str | None:
        """None when the file is a sound store of this schema, else what is wrong with it."""
        try:
            c = self._connect()
            try:
                found = c.execute("PRAGMA quick_check").fetchone()[0]
                if found != "ok":
                    return f"quick_check: {found}"
                version = c.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA_VERSION):
                    return f"schema {version}, expected {SCHEMA_VERSION}"
                c.executescript(_SCHEMA)
                c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            finally:
                c.close()
        except sqlite3.DatabaseError as e:  # "file is not a database", "malformed", ...
            return str(e)
        return None

    def _move_aside(self, why: str) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt")  # one kept for a person to look at
        log.error("embedding store %s is damaged (%s): moved to %s, starting empty", self.path, why, aside)
        for suffix in ("-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)
        if self.path.exists():
            os.replace(self.path, aside)
        self.rebuilt += 1

    def _open_checked(self, seen_ino: int | None = None) -> None:
        """(Re)open both connections on a sound file. With seen_ino (the file this process found damaged):
        rebuild it unless another replica already did."""
        with self._file_lock():
            ino = _inode(self.path)
            if seen_ino is None or ino == seen_ino:
                why = self._check()
                if why is not None:
                    self._close()
                    self._move_aside(why)
                    if (why := self._check()) is not None:
                        raise sqlite3.DatabaseError(f"cannot create {self.path}: {why}")
            self._close()
            self._reader, self._writer, self._ino = self._connect(), self._connect(), _inode(self.path)

    def _close(self) -> None:
        for c in (self._reader, self._writer):
            if c is not None:
                try:
                    c.close()
                except sqlite3.Error:
                    pass
        self._reader = self._writer = None

    def _current(self) -> None:
        """Reopen when another replica rebuilt the file since this one opened it."""
        if _inode(self.path) != self._ino:
            self._open_checked()

    def _failed(self, what: str, e: Exception) -> None:
        self.errors += 1
        log.warning("embedding store %s: %s failed: %s", self.path, what, e)
        if isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError):
            try:  # damaged under us: check, and rebuild if it is
                self._open_checked(seen_ino=self._ino)
            except Exception as e2:  # noqa: BLE001 - the next call tries again
                log.error("embedding store %s cannot be rebuilt: %s", self.path, e2)

    # -- reads ------------------------------------------------------------------------------------
    def get_many(self, keys: list[bytes]) -> dict[bytes, Entry]:
        """The stored entries among `keys` (missing ones absent). Never raises."""
        if not keys:
            return {}
        with self._read_lock:
            try:
                self._current()
                rows = self._reader.execute(  # type: ignore[union-attr]
                    f"SELECT key, dim, cut, emb, used FROM embeddings WHERE key IN ({','.join('?' * len(keys))})",
                    keys).fetchall()
            except Exception as e:  # noqa: BLE001 - a store failure is a miss, never a failed request
                self._failed("read", e)
                rows = []
        out: dict[bytes, Entry] = {}
        stale: list[bytes] = []
        old = time.time() - TOUCH_AFTER_S
        for key, dim, cut, emb, used in rows:
            out[key] = (np.frombuffer(emb, dtype=np.float16).reshape(-1, dim), bool(cut))
            if used < old:
                stale.append(key)
        self.hits += len(out)
        self.misses += len(keys) - len(out)
        if stale:
            self._enqueue("touch", stale)
        return out

    # -- writes (on the writer thread) ------------------------------------------------------------
    def put_many(self, items: list[tuple[bytes, str, Entry]]) -> None:
        """Queue (key, version label, entry) rows for the writer thread."""
        if items:
            self._enqueue("put", items)

    def _enqueue(self, op: str, arg: list) -> None:
        try:
            self._queue.put_nowait((op, arg))
        except queue.Full:  # the writer is behind (a slow disk, a long lock): these are computed again
            self.dropped += 1

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far is written (tests, a job's end). False on timeout."""
        done = threading.Event()
        self._queue.put(("flush", done))
        return done.wait(timeout)

    def _write_loop(self) -> None:
        while True:
            op, arg = self._queue.get()
            if op == "flush":
                arg.set()
                continue
            if op == "stop":
                return
            try:
                with self._read_lock:  # a reopen swaps both connections
                    self._current()
                    writer = self._writer
                if op == "put":
                    self._put(writer, arg)  # type: ignore[arg-type]
                else:
                    writer.executemany("UPDATE embeddings SET used=? WHERE key=?",  # type: ignore[union-attr]
                                       [(time.time(), k) for k in arg])
            except Exception as e:  # noqa: BLE001 - dropped: the entry is computed again when next needed
                try:
                    writer.execute("ROLLBACK")  # type: ignore[union-attr]
                except Exception:  # noqa: BLE001 - no transaction was open
                    pass
                with self._read_lock:
                    self._failed("write", e)

    def _put(self, c: sqlite3.Connection, items: list[tuple[bytes, str, Entry]]) -> None:
        now = time.time()
        rows = [(key, label, e[0].shape[1], int(e[1]), np.ascontiguousarray(e[0], dtype=np.float16).tobytes(), now)
                for key, label, e in items if e[0].ndim == 2 and e[0].shape[1] > 0]
        incoming = sum(len(r[4]) + ROW_OVERHEAD for r in rows)
        if incoming > self.max_bytes * EVICT_TO:
            return  # one batch bigger than the store: not stored
        c.execute("BEGIN IMMEDIATE")
        self._evict(c, incoming)
        c.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?)", rows)
        c.execute("COMMIT")

    def _evict(self, c: sqlite3.Connection, incoming: int) -> None:
        """Inside the write transaction: drop the least recently used rows until the live pages plus
        `incoming` fit in EVICT_TO of the bound."""
        live = _live_bytes(c)
        if live + incoming <= self.max_bytes:
            return
        count = c.execute("SELECT count(*) FROM embeddings").fetchone()[0]
        if not count:
            return
        per_row = live / count
        drop = int(np.ceil((live + incoming - self.max_bytes * EVICT_TO) / per_row))
        c.execute("DELETE FROM embeddings WHERE key IN (SELECT key FROM embeddings ORDER BY used LIMIT ?)", (drop,))

    # -- the rest ---------------------------------------------------------------------------------
    def stats(self) -> dict[str, int | float]:
        out: dict[str, int | float] = {"hits": self.hits, "misses": self.misses, "errors": self.errors,
                                       "rebuilt": self.rebuilt, "dropped": self.dropped, "max_bytes": self.max_bytes}
        with self._read_lock:
            try:
                self._current()
                c = self._reader
                out["entries"] = c.execute("SELECT count(*) FROM embeddings").fetchone()[0]  # type: ignore[union-attr]
                out["live_bytes"] = _live_bytes(c)  # type: ignore[arg-type]
                out["file_bytes"] = self.path.stat().st_size
            except Exception as e:  # noqa: BLE001 - stats of a broken store: what is known
                self._failed("stats", e)
        return out

    def versions(self) -> dict[str, int]:
        """Entries per version label ({} when the store cannot be read)."""
        with self._read_lock:
            try:
                self._current()
                return dict(self._reader.execute(  # type: ignore[union-attr]
                    "SELECT version, count(*) FROM embeddings GROUP BY version").fetchall())
            except Exception as e:  # noqa: BLE001
                self._failed("versions", e)
                return {}

    def close(self) -> None:
        self.flush()
        self._queue.put(("stop", None))
        self._thread.join(5)
        with self._read_lock:
            self._close()


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _live_bytes(c: sqlite3.Connection) -> int:
    pages, free, size = (c.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size"))
    return (pages - free) * size
