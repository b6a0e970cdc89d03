"""A bounded LRU of passage embeddings, for bi-encoder versions.

RAG backends send the same chunks again and again, and a bi-encoder's passage embedding does not depend
on the query: a cached document costs no tokenization and no inference. Keys are (version dir, window
settings, sha of the text); values the document's window embeddings. One cache per pool replica,
shared by every version it holds, bounded in bytes (RERANKER_EMBEDDING_CACHE_MB).
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Hashable

import numpy as np

Entry = tuple[np.ndarray, bool]  # (window embeddings: n_windows x dim, the document was cut at its cap)


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class EmbeddingCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # the pool scores from several threads
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> Entry | None:
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: Hashable, entry: Entry) -> None:
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
