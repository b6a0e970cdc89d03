"""A/B arm choice: which of a domain's two arms ("domain" or "base") answers a request.

Sticky: the arm is a pure function of (domain, user key, split), so one user always sees
the same arm for a domain, on any replica, across restarts. No user key -> a fresh coin
flip per request. `split` is the share of traffic that goes to the domain arm.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Mapping

from state.ids import BASE_MODEL_ID, model_id

DOMAIN, BASE = "domain", "base"
_SCALE = float(1 << 64)


@dataclass
class Arm:
    variant: str  # DOMAIN | BASE
    model_id: str  # "legal@v7" | "base"
    reason: str | None = None  # why the base answers when the domain was asked for


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


def user_key(user_id: str | None, x_user_id: str | None = None, x_session_id: str | None = None) -> str | None:
    """The sticky key: body user_id, else the X-User-Id header, else X-Session-Id."""
    return user_id or x_user_id or x_session_id or None


def choose(domain: str, domain_config: Mapping[str, Any] | None, key: str | None, default_split: float) -> Arm:
    """The arm for one request. A domain without an active version gets the base; the split is the
    domain's configured ab_split, else the service default."""
    active = (domain_config or {}).get("active")
    if not active:
        return Arm(BASE, BASE_MODEL_ID, "no active domain model")
    split = domain_config.get("ab_split")
    split = default_split if split is None else float(split)
    if assign_arm(domain, key, split) == BASE:
        return Arm(BASE, BASE_MODEL_ID)
    return Arm(DOMAIN, model_id(domain, active))
