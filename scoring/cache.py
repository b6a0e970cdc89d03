"""Passage embeddings of bi-encoder versions: a bounded in-memory LRU per pool replica, in front of the
node's persistent store (scoring/embedding_store.py) when there is one.

RAG backends send the same chunks again and again, and a bi-encoder's passage embedding does not depend
on the query: a cached document costs no tokenization and no inference. Keys (`entry_key`) hash the
version's identity (its manifest and engine: stable across restarts and moves of the directory), the
window settings and the text; values are the document's window embeddings in fp16 (half the bytes; the
score parity is measured in benchmarks/embedding_store.py). Memory bounded in bytes
(RERANKER_EMBEDDING_CACHE_MB), the store by RERANKER_EMBEDDING_STORE_MB.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict


from scoring.embedding_store import Entry, EmbeddingStore

__all__ = ["Entry", "EmbeddingCache", "entry_key", "version_identity"]


def version_identity(manifest: bytes, engine: str) -> bytes:
    """What a version's embeddings depend on: its manifest (which names its files' sha256, or was written
    when they were built) and the engine that runs it (OpenVINO and onnxruntime differ slightly)."""
    return hashlib.blake2b(manifest + b"\0" + engine.encode(), digest_size=16).digest()


def entry_key(identity: bytes, setting: tuple, text: str) -> bytes:
    """The same in every process: the store is shared by the replicas of a node."""
    h = hashlib.blake2b(identity, digest_size=16)
    h.update(repr(setting).encode())
    h.update(b"\0")
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.digest()


class EmbeddingCache:
    def __init__(self, max_bytes: int, store: EmbeddingStore | None = None):
        self.max_bytes, self.store = max_bytes, store
        self._items: OrderedDict[bytes, Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # the pool scores from several threads
        self.hits = self.misses = 0

    def get(self, key: bytes) -> Entry | None:
        return self.get_many([key])[0]

    def get_many(self, keys: list[bytes]) -> list[Entry | None]:
        """Memory first, then one read of the store for the rest (its hits are kept in memory too)."""
        with self._lock:
            found: list[Entry | None] = []
            for key in keys:
                entry = self._items.get(key)
                if entry is not None:
                    self._items.move_to_end(key)
                found.append(entry)
        missing = [k for k, e in zip(keys, found) if e is None]
        stored = self.store.get_many(missing) if self.store is not None and missing else {}
        for key, entry in stored.items():
            self._remember(key, entry)
        found = [e if e is not None else stored.get(k) for k, e in zip(keys, found)]
        hits = sum(e is not None for e in found)
        self.hits += hits
        self.misses += len(keys) - hits
        return found

    def put(self, key: bytes, entry: Entry) -> None:
        self.put_many([(key, entry)])

    def put_many(self, items: list[tuple[bytes, Entry]], label: str = "") -> None:
        """Into memory, and (queued, written in the background) into the store under the version's label."""
        for key, entry in items:
            self._remember(key, entry)
        if self.store is not None:
            self.store.put_many([(key, label, entry) for key, entry in items])

    def _remember(self, key: bytes, entry: Entry) -> None:
        size = entry[0].nbytes
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[0].nbytes
            self._items[key] = entry
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped[0].nbytes

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._items), "bytes": self._bytes, "hits": self.hits, "misses": self.misses}
