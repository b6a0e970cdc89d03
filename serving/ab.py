"""A/B arm choice: which of a domain's arms ("domain" = the champion, "challenger", "base") answers.

Sticky: the arm is a pure function of (domain, user key, shares), so one user always sees the same arm
for a domain, on any replica, across restarts. No user key -> a fresh draw per request.
Without a challenger: the domain arm gets `ab_split` of the traffic, the base the rest. With one: the
base keeps `base_share` (the holdout), the challenger `challenger_share` of the rest, the champion the
remainder. The arms take consecutive slices of [0, 1) in the order domain, challenger, base.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Mapping

from state.ids import BASE_MODEL_ID, model_id

DOMAIN, CHALLENGER, BASE = "domain", "challenger", "base"
# The impression variant of a base the request named itself (`model: base:multilingual`): the user chose
# it, the A/B test did not, so it must not count in the domain's base arm (state/ab_report.py reads ARMS).
REQUESTED = "requested"
ARMS = (DOMAIN, CHALLENGER, BASE)
_SCALE = float(1 << 64)


@dataclass
class Arm:
    variant: str  # DOMAIN | CHALLENGER | BASE
    model_id: str  # "legal@v7" | "base"
    reason: str | None = None  # why the base answers when the domain was asked for
    language: str | None = None  # detected over the request when base routing chose the base (base_routing.py)
    requested: bool = False  # named in the request's `model`, not assigned: logged as REQUESTED, outside every arm


def bucket(domain: str, user_key: str) -> float:
    """A uniform number in [0, 1) fixed for (domain, key); salted by domain so a user's arms
    in different domains are independent."""
    h = hashlib.sha256(f"{domain}\x00{user_key}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / _SCALE


def shares(domain_config: Mapping[str, Any] | None, settings: Any) -> dict[str, float]:
    """Each arm's share of a domain's traffic: the domain's own settings, else the service defaults."""
    cfg = domain_config or {}
    active, challenger = cfg.get("active"), cfg.get("challenger")
    if not active:
        return {BASE: 1.0}

    def own(key: str, default: float) -> float:
        return default if cfg.get(key) is None else float(cfg[key])

    if challenger and challenger != active:
        base = own("base_share", settings.ab_base_share)
        ch = (1.0 - base) * own("challenger_share", settings.ab_challenger_share)
        return {DOMAIN: 1.0 - base - ch, CHALLENGER: ch, BASE: base}
    split = own("ab_split", settings.ab_split)
    return {DOMAIN: split, BASE: 1.0 - split}


def assign_arm(domain: str, user_key: str | None, arm_shares: Mapping[str, float]) -> str:
    u = bucket(domain, user_key) if user_key else random.random()
    edge = 0.0
    for arm in ARMS:
        edge += arm_shares.get(arm, 0.0)
        if u < edge:
            return arm
    return BASE  # rounding: the shares sum to 1 within a few ulps


def user_key(user_id: str | None, x_user_id: str | None = None, x_session_id: str | None = None) -> str | None:
    """The sticky key: body user_id, else the X-User-Id header, else X-Session-Id."""
    return user_id or x_user_id or x_session_id or None


def choose(domain: str, domain_config: Mapping[str, Any] | None, key: str | None, settings: Any) -> Arm:
    """The arm for one request. A domain without an active version gets the base."""
    if not (domain_config or {}).get("active"):
        return Arm(BASE, BASE_MODEL_ID, "no active domain model")
    arm = assign_arm(domain, key, shares(domain_config, settings))
    if arm == BASE:
        return Arm(BASE, BASE_MODEL_ID)
    return Arm(arm, model_id(domain, domain_config["challenger" if arm == CHALLENGER else "active"]))
