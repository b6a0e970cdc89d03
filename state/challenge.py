"""The referee of a domain's champion/challenger test: reads the test's impressions and errors, asks
the decision rule (state/sequential.py) and applies its outcome: promote (the challenger becomes the
active version; the old one is retired and stays in the history for rollback), reject or
inconclusive (the challenger is retired, the champion stays). Each outcome is stored with its
statistics and reasons (state/decisions.py). A plain class: serving runs it on a timer and on request
(serving/autopilot.py), the CLI and the tests call it directly."""
from __future__ import annotations

import time
from typing import Any

from state.decisions import DecisionLog
from state.ids import model_id, split_model_id
from state.registry import Registry, RegistryError
from state.sequential import CONTINUE, PROMOTE, ArmStream, DecisionRule
from state.store import Store


class NoTest(RegistryError):
    """The domain has no challenger under test."""


class Referee:
    def __init__(self, registry: Registry, store: Store, rule: DecisionRule):
        self.registry, self.store, self.rule = registry, store, rule
        self.log = DecisionLog(store)

    def current(self, domain: str, now: float | None = None) -> dict[str, Any]:
        """The running test's statistics and what the rule would decide now (nothing is applied)."""
        cfg = self.registry.config(domain)
        if not (cfg.get("challenger") and cfg.get("active")):
            raise NoTest(f"{domain} has no challenger under test")
        since = float(cfg["challenger_since"])
        champion, challenger = model_id(domain, cfg["active"]), model_id(domain, cfg["challenger"])
        rows = self.store.model_rows(domain, since, [champion, challenger])
        errors = self.store.arm_errors(domain, since)

        def arm(model: str) -> ArmStream:
            return ArmStream.from_rows([(t, lat, pos) for t, m, lat, pos in rows if m == model], errors.get(model, 0))

        now = time.time() if now is None else now
        return {"domain": domain, "champion": champion, "challenger": challenger, "since": since,
                **self.rule.decide(arm(champion), arm(challenger), now - since)}

    def evaluate(self, domain: str, actor: str, now: float | None = None) -> dict[str, Any]:
        """current(), and when the rule reached an outcome: apply it and store the decision
        (`decision` in the answer; None while the test goes on or when another caller applied it first)."""
        cur = self.current(domain, now)
        cur["decision"] = None
        if cur["outcome"] == CONTINUE:
            return cur
        version = split_model_id(cur["challenger"])[1]
        try:
            if cur["outcome"] != PROMOTE:
                self.registry.end_challenge(domain, version)
            elif self.registry.config(domain).get("challenger") != version:
                return cur  # ended meanwhile (another replica, an admin)
            else:
                # conditional on the champion the test measured: a promote by hand meanwhile is a conflict
                champion = split_model_id(cur["champion"])[1]
                self.registry.promote(domain, version, expected_active=champion)  # ends the test
        except RegistryError as e:
            cur["reasons"] = cur["reasons"] + [f"not applied: {e}"]
            return cur
        cur["decision"] = self.log.add_decision(domain, cur["champion"], cur["challenger"], cur["outcome"], actor,
                                                cur["stats"], cur["reasons"])
        return cur
