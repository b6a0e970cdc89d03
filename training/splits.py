"""Seeded, query-level splits and subsets (a query never lands on both sides; nor a query group)."""
from __future__ import annotations

import hashlib


def _key(seed: int, qid: str) -> str:
    return hashlib.sha256(f"{seed}:{qid}".encode()).hexdigest()


def subset(qids: list[str], n: int | None, seed: int = 12) -> list[str]:
    """A reproducible subset of n query ids (stable: the first n of a seeded order)."""
    ordered = sorted(qids, key=lambda q: _key(seed, q))
    return ordered if n is None else sorted(ordered[:n])


def split(qids: list[str], dev_fraction: float, seed: int = 12,
          groups: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(train, dev) query ids, dev about `dev_fraction` of them. With `groups` (query id -> group: the
    paraphrases of one FAQ question, say), whole groups go to one side, so that dev never asks what
    train already asked in other words; a query without a group is a group of its own."""
    ordered = sorted(set(qids), key=lambda q: _key(seed, q))
    n_dev = max(1, round(len(ordered) * dev_fraction)) if len(ordered) > 1 else 0
    if not groups:
        return sorted(ordered[n_dev:]), sorted(ordered[:n_dev])
    members: dict[str, list[str]] = {}
    for q in ordered:
        members.setdefault(groups.get(q, f"query:{q}"), []).append(q)
    dev: list[str] = []
    for g in sorted(members, key=lambda g: _key(seed, g))[:-1]:  # the last group stays in train whatever
        if len(dev) >= n_dev:
            break
        dev += members[g]
    taken = set(dev)
    return sorted(q for q in ordered if q not in taken), sorted(dev)
