"""A/B arm assignment: which of a domain's two arms ("domain" or "base") answers a request.

Sticky: the arm is a pure function of (domain, user key, split), so one user always sees
the same arm for a domain, on any replica, across restarts. No user key -> a fresh coin
flip per request. `split` is the share of traffic that goes to the domain arm.
"""
from __future__ import annotations

import hashlib
import random
from typing import Mapping

from state.ids import BASE_MODEL_ID

DOMAIN, BASE = "domain", "base"
_SCALE = float(1 << 64)


def bucket(domain: str, user_key: str) -> float:
    """A uniform number in [0, 1) fixed for (domain, key); salted by domain so a user's arms
    in different domains are independent."""
    h = hashlib.sha256(f"{domain}\x00{user_key}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / _SCALE


def assign_arm(domain: str, user_key: str | None, split: float) -> str:
    if not 0.0 <= split <= 1.0:
        raise ValueError(f"split must be between 0 and 1, got {split}")
    u = bucket(domain, user_key) if user_key else random.random()
    return DOMAIN if u < split else BASE


def user_key_from(user_id: str | None, headers: Mapping[str, str]) -> str | None:
    """body user_id, else X-User-Id, else X-Session-Id (header lookup is case-insensitive in
    Starlette's Headers; plain dicts are searched case-insensitively here)."""
    if user_id:
        return user_id
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in ("x-user-id", "x-session-id"):
        if lowered.get(name):
            return lowered[name]
    return None


def choose(domain: str, active_version: str | None, user_key: str | None,
           split: float) -> tuple[str, str]:
    """(variant, model id) for a request. A domain without an active version gets the base."""
    if not active_version:
        return BASE, BASE_MODEL_ID
    if assign_arm(domain, user_key, split) == DOMAIN:
        return DOMAIN, f"{domain}@{active_version}"
    return BASE, BASE_MODEL_ID


def split_for(domain_config: Mapping | None, default: float) -> float:
    """The domain's configured ab_split (registry), else the service default."""
    value = (domain_config or {}).get("ab_split")
    return default if value is None else float(value)
