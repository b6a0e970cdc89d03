"""Seeded, query-level splits and subsets (a query never lands on both sides)."""
from __future__ import annotations

import hashlib


def _key(seed: int, qid: str) -> str:
    return hashlib.sha256(f"{seed}:{qid}".encode()).hexdigest()


def subset(qids: list[str], n: int | None, seed: int = 12) -> list[str]:
    """A reproducible subset of n query ids (stable: the first n of a seeded order)."""
    ordered = sorted(qids, key=lambda q: _key(seed, q))
    return ordered if n is None else sorted(ordered[:n])


def split(qids: list[str], dev_fraction: float, seed: int = 12) -> tuple[list[str], list[str]]:
    ordered = sorted(set(qids), key=lambda q: _key(seed, q))
    n_dev = max(1, round(len(ordered) * dev_fraction)) if len(ordered) > 1 else 0
    return sorted(ordered[n_dev:]), sorted(ordered[:n_dev])
