"""Champion vs challenger without Ray: the three-arm assignment, the sequential decision rule on
synthetic streams (type-I error, power, guardrails), the referee on a real SQLite store and registry,
and the autopilot's rounds (a job launcher that records instead of starting training)."""
from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pytest

from benchmarks.decision_rule import naive_peeking_promotes, stream
from serving.ab import assign_arm, choose, shares
from serving.autopilot import Autopilot
from state.challenge import NoTest, Referee
from state.jobs import JobStore
from state.registry import Registry, RegistryError
from state.sequential import DecisionRule
from state.settings import Settings
from state.store import ImpressionEvent, ShownPassage, Store

# ---- three arms ------------------------------------------------------------------------------------
def test_three_arm_shares_stickiness_and_defaults():
    s = Settings(ab_split=0.5, ab_base_share=0.1, ab_challenger_share=0.5)
    with_ch = {"active": "v1", "challenger": "v2"}
    assert shares(with_ch, s) == pytest.approx({"domain": 0.45, "challenger": 0.45, "base": 0.1})
    assert shares({"active": "v1"}, s) == {"domain": 0.5, "base": 0.5}  # no challenger: as before
    assert shares({"active": "v1", "challenger": "v1"}, s) == {"domain": 0.5, "base": 0.5}  # promoted meanwhile
    assert shares({**with_ch, "base_share": 0.0, "challenger_share": 0.2}, s) == pytest.approx(
        {"domain": 0.8, "challenger": 0.2, "base": 0.0})
    keys = [f"user-{i}" for i in range(20000)]
    arms = [choose("legal", with_ch, k, s) for k in keys]
    counts = {v: sum(a.variant == v for a in arms) / len(keys) for v in ("domain", "challenger", "base")}
    assert counts["base"] == pytest.approx(0.1, abs=0.01)
    assert counts["challenger"] == pytest.approx(0.45, abs=0.015)
    assert {a.model_id for a in arms if a.variant == "challenger"} == {"legal@v2"}
    assert {a.model_id for a in arms if a.variant == "domain"} == {"legal@v1"}
    # sticky: one user, one arm of a domain, however often asked
    assert all(choose("legal", with_ch, k, s).variant == a.variant for k, a in zip(keys[:500], arms))
    # a 0 holdout means no base at all while the test runs
    no_base = {**with_ch, "base_share": 0.0}
    assert {assign_arm("legal", k, shares(no_base, s)) for k in keys[:2000]} == {"domain", "challenger"}


# ---- the decision rule on synthetic streams ------------------------------------------------------
def test_type_one_error_under_continuous_monitoring():
    """200 seeds, no effect, the rule looks after every impression: false promotes <= 5% + slack; a
    fixed-horizon z-test peeked at every 100 impressions promotes far more often on the same streams."""
    rule = DecisionRule(min_exposure=200)
    promotes, naive = 0, 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        a, b = stream(rng, 3000, 0.3), stream(rng, 3000, 0.3)
        promotes += rule.decide(a, b, 0)["outcome"] == "promote"
        naive += naive_peeking_promotes(a, b, rule.min_exposure)  # stops at the first p < 0.05 in favour
    assert promotes <= 14, promotes  # 5% of 200 = 10, slack for 200 draws
    assert naive > 2 * max(promotes, 5), (naive, promotes)


def test_power_under_an_effect_and_harm_is_rejected():
    rule = DecisionRule(min_exposure=200)
    outcomes = []
    for seed in range(100):
        rng = np.random.default_rng(1000 + seed)
        outcomes.append(rule.decide(stream(rng, 4000, 0.30), stream(rng, 4000, 0.35), 0)["outcome"])
    assert outcomes.count("promote") >= 80, outcomes.count("promote")
    assert "reject" not in outcomes
    rng = np.random.default_rng(7)
    worse = rule.decide(stream(rng, 4000, 0.35), stream(rng, 4000, 0.28), 0)
    assert worse["outcome"] == "reject" and any("CTR worse" in r for r in worse["reasons"])
    ctr = worse["stats"]["metrics"]["ctr"]
    assert ctr["cs"][1] < 0 and ctr["p_value"] < 0.025


def test_mrr_alone_can_decide():
    """Same CTR, but the challenger's first clicks land higher: MRR carries the decision."""
    rng = np.random.default_rng(3)
    top = np.array([0.8, 0.1, 0.05, 0.03, 0.02])
    r = DecisionRule(min_exposure=200).decide(stream(rng, 4000, 0.3), stream(rng, 4000, 0.3, ranks=top), 0)
    assert r["outcome"] == "promote" and any(x.startswith("MRR better") for x in r["reasons"])


def test_guardrails_exposure_and_limits():
    rule = DecisionRule(min_exposure=200, max_impressions=3000, max_duration_s=3600)
    rng = np.random.default_rng(11)
    better_but_slow = rule.decide(stream(rng, 2000, 0.3), stream(rng, 2000, 0.4, latency=20.0), 0)
    assert better_but_slow["outcome"] == "reject"
    assert better_but_slow["reasons"][0].startswith("guardrail latency_ms_p95")
    erring = rule.decide(stream(rng, 2000, 0.3, errors=2), stream(rng, 2000, 0.4, errors=80), 0)
    assert erring["outcome"] == "reject" and "guardrail error_rate" in erring["reasons"][0]
    within = rule.decide(stream(rng, 2000, 0.3, errors=20), stream(rng, 2000, 0.3, errors=25, latency=11.0), 0)
    assert all(g["passed"] for g in within["stats"]["guardrails"])
    early = rule.decide(stream(rng, 150, 0.1), stream(rng, 150, 0.9), 0)  # huge effect, too little exposure
    assert early["outcome"] == "continue" and "200 needed" in early["reasons"][0]
    assert rule.decide(stream(rng, 150, 0.3), stream(rng, 150, 0.3), 4000)["outcome"] == "inconclusive"
    same = rule.decide(stream(rng, 3000, 0.3), stream(rng, 3000, 0.3), 10)
    assert same["outcome"] == "inconclusive" and "maximum of 3000 impressions" in same["reasons"][0]


# ---- the referee on a real store and registry ----------------------------------------------------
def _publish(reg: Registry, domain: str) -> str:
    staged = reg.stage(domain)
    (staged / "model.onnx").write_bytes(uuid.uuid4().bytes)  # the referee never loads it
    return reg.publish(domain, staged, {"kind": "cross-encoder"})


def _impressions(store: Store, domain: str, variant: str, model: str, n: int, ctr: float, rng, latency=10.0):
    events = []
    for i in range(n):
        rid = uuid.uuid4().hex
        events.append(ImpressionEvent(request_id=rid, domain=domain, variant=variant, model=model, query=f"q{i}",
                                      latency_ms=float(rng.gamma(8, latency / 8)), n_documents=2,
                                      shown=[ShownPassage(0, 0, "a", 0.9), ShownPassage(1, 1, "b", 0.1)],
                                      user_key=f"u{i}", ts=time.time()))
    store.add_impressions(events)
    for e in events:
        if rng.random() < ctr:
            store.record_clicks(e.request_id, [int(rng.integers(0, 2))])


@pytest.fixture
def world(tmp_path):
    settings = Settings(home=tmp_path, decision_min_exposure=100, autopilot_interval_s=0)
    store = Store(settings.database_url)
    reg = Registry(settings.registry_root)
    yield settings, store, reg
    store.close()


def test_referee_promotes_with_rollback_and_rejects(world):
    settings, store, reg = world
    referee = Referee(reg, store, DecisionRule.from_settings(settings))
    v1, v2 = _publish(reg, "legal"), _publish(reg, "legal")
    with pytest.raises(RegistryError, match="no active version"):
        reg.set_challenger("legal", v2)
    reg.promote("legal", v1)
    with pytest.raises(NoTest):
        referee.current("legal")
    reg.set_challenger("legal", v2)
    assert reg.describe("legal")["challenger"] == v2
    with pytest.raises(RegistryError, match="under test already"):
        reg.set_challenger("legal", _publish(reg, "legal"))
    rng = np.random.default_rng(5)
    _impressions(store, "legal", "domain", "legal@v1", 60, 0.3, rng)
    _impressions(store, "legal", "challenger", "legal@v2", 60, 0.6, rng)
    assert referee.evaluate("legal", "tester")["outcome"] == "continue"  # under the minimum exposure
    _impressions(store, "legal", "domain", "legal@v1", 900, 0.3, rng)
    _impressions(store, "legal", "challenger", "legal@v2", 900, 0.6, rng)
    _impressions(store, "legal", "base", "base", 200, 0.0, rng)  # the holdout never enters the test
    r = referee.evaluate("legal", "tester")
    assert r["outcome"] == "promote" and r["decision"]["actor"] == "tester"
    assert r["stats"]["arms"]["champion"]["impressions"] == 960
    cfg = reg.config("legal")
    assert cfg["active"] == v2 and cfg["challenger"] is None and cfg["versions"][v1]["status"] == "retired"
    stored = referee.log.decisions("legal")
    assert [d["outcome"] for d in stored] == ["promote"] and stored[0]["stats"]["metrics"]["ctr"]["cs"][0] > 0
    assert reg.rollback("legal") == v1  # the old champion stays available
    reg.promote("legal", v2)
    # a worse challenger is rejected and retired; the champion keeps serving
    v4 = _publish(reg, "legal")
    reg.set_challenger("legal", v4)
    _impressions(store, "legal", "challenger", "legal@v4", 900, 0.1, rng)
    _impressions(store, "legal", "domain", "legal@v2", 900, 0.6, rng)
    r = referee.evaluate("legal", "autopilot")
    assert r["outcome"] == "reject"
    cfg = reg.config("legal")
    assert cfg["active"] == v2 and cfg["challenger"] is None and cfg["versions"][v4]["status"] == "retired"
    assert [d["outcome"] for d in referee.log.decisions("legal")] == ["reject", "promote"]


# ---- the autopilot's rounds --------------------------------------------------------------------
def test_autopilot_triggers_limits_kill_switch_and_spill(world):
    settings, store, reg = world
    launched: list[str] = []
    pilot = Autopilot(settings, reg, store, launch=lambda job_id, _s: launched.append(job_id) or f"fake:{job_id}")
    jobs = JobStore(settings.home)

    def actions(domain="legal"):
        return {a["action"]: a["reason"] for a in pilot.round() if a["domain"] == domain}

    assert pilot.round() == []  # nobody switched it on
    pilot.config.update("legal", enabled=True, min_clicked_queries=3, min_expert_labels=1000)
    assert "no earlier training job" in actions()["waiting"]
    first = jobs.create("legal", "reranker", {"data": {"beir": "/data/x"}, "train": {"epochs": 1}, "activate": True})
    jobs.update(first["id"], status="succeeded", version=None)
    rng = np.random.default_rng(1)
    _impressions(store, "legal", "base", "base", 2, 1.0, rng)
    assert "2/3 new clicked queries" in actions()["waiting"]
    _impressions(store, "legal", "base", "base", 3, 1.0, rng)
    pilot.config.set_killed(True)
    assert pilot.round() == [{"domain": None, "action": "none", "reason": "the kill switch is on"}]
    pilot.config.set_killed(False)
    settings.spill_path.write_text('{"request_id": "x"}\n')
    assert "spilling" in pilot.round()[0]["reason"] and not launched
    settings.spill_path.unlink()
    # the cluster-wide limit: another domain's job is running
    other = jobs.create("medical", "reranker", {})
    jobs.update(other["id"], status="running")
    assert "the limit is 1" in actions()["waiting"]
    jobs.update(other["id"], status="failed")
    started = actions()["started"]
    assert len(launched) == 1 and launched[0] in started
    job = jobs.get(launched[0])
    assert job["config"] == {"data": {"beir": "/data/x"}, "train": {"epochs": 1}, "activate": False, "by": "autopilot"}
    assert job["ray_job_id"] == f"fake:{launched[0]}"
    assert actions()["waiting"] == "a training job of this domain is running"  # one per domain
    # the job publishes: its version becomes the active one (no champion yet), the next one the challenger
    v1 = _publish(reg, "legal")
    jobs.update(launched[0], status="succeeded", version=f"legal@{v1}")
    assert "is active" in actions()["promoted"] and reg.config("legal")["active"] == v1
    assert "not enough new signal" in actions()["waiting"]  # counted since the autopilot's job
    _impressions(store, "legal", "base", "base", 3, 1.0, rng)
    assert "started" in actions()
    v2 = _publish(reg, "legal")
    jobs.update(launched[1], status="succeeded", version=f"legal@{v2}")
    assert "challenges legal@v1" in actions()["challenged"]
    assert reg.config("legal")["challenger"] == v2
    during = [a["reason"] for a in pilot.round() if a["domain"] == "legal"]  # the referee's, then the pilot's
    assert during == ["0 impressions in the smaller arm, 100 needed", "a challenger is under test"]
    kinds = [e["kind"] for e in pilot.log.events("legal")]
    assert kinds == ["challenged", "promoted"]


def test_autopilot_window_and_settings_validation(world):
    settings, store, reg = world
    pilot = Autopilot(settings, reg, store, launch=lambda *_: "x")
    with pytest.raises(ValueError, match="unknown autopilot settings"):
        pilot.config.update("legal", nonsense=1)
    from serving.autopilot import _in_window
    noon = time.mktime(time.strptime("2026-01-01 12:30", "%Y-%m-%d %H:%M")) - time.timezone
    assert _in_window({"window_start_hour": 10, "window_end_hour": 14}, noon)
    assert not _in_window({"window_start_hour": 22, "window_end_hour": 6}, noon)  # over midnight
    assert _in_window({"window_start_hour": None, "window_end_hour": None}, noon)
    pilot.config.update("legal", enabled=True, window_start_hour=(time.gmtime().tm_hour + 2) % 24,
                        window_end_hour=(time.gmtime().tm_hour + 3) % 24)
    jobs = JobStore(settings.home)
    jobs.update(jobs.create("legal", "reranker", {})["id"], status="succeeded")
    assert "outside the hours" in pilot.round()[0]["reason"]
    assert json.loads((settings.home / "autopilot.json").read_text())["domains"]["legal"]["enabled"] is True


def test_cli_challenger_decide_decisions(world, monkeypatch, base_version):
    """The CLI loads a challenger and embeds the domain's passages with it on this node before it takes
    traffic (its latency is a guardrail against the champion's), as the HTTP route does; so does promote."""
    from typer.testing import CliRunner

    from cli.main import app
    from scoring.embedding_store import EmbeddingStore
    from state.passages import PassageStore
    settings, store, reg = world
    monkeypatch.setenv("RERANKER_HOME", str(settings.home))
    monkeypatch.delenv("RERANKER_DB_URL", raising=False)
    monkeypatch.setenv("RERANKER_DECISION_MIN_EXPOSURE", "100")
    PassageStore(settings.home).add("legal", [(None, "A lease ends on notice."), (None, "Rent is due monthly.")])
    run = CliRunner().invoke
    v1, v2 = reg.publish_dir("legal", base_version), reg.publish_dir("legal", base_version)
    r = run(app, ["promote", "legal", v1])
    assert r.exit_code == 0 and "legal@v1 is active (warm: 2 of 2 passages" in r.output, r.output
    broken = _publish(reg, "legal")  # random bytes: it cannot load, so it is never tested
    r = run(app, ["challenger", "legal", broken])
    assert r.exit_code == 2 and "does not load" in r.output and reg.config("legal")["challenger"] is None
    assert reg.config("legal")["versions"][broken]["status"] == "failed"
    assert run(app, ["challenger", "legal", v1]).exit_code == 2  # the active version
    r = run(app, ["challenger", "legal", v2, "--by", "bob"])
    assert r.exit_code == 0 and "legal@v2: challenger" in r.output
    stored = EmbeddingStore(settings.embedding_store_file, 1 << 30)
    assert {stored.versions().get(m) for m in ("legal@v1", "legal@v2")} == {2}, stored.versions()
    stored.close()
    r = run(app, ["decisions", "legal"])
    assert r.exit_code == 0 and "legal@v2 vs legal@v1: continue" in r.output and "decisions (0)" in r.output
    rng = np.random.default_rng(9)
    _impressions(store, "legal", "domain", "legal@v1", 400, 0.5, rng)
    _impressions(store, "legal", "challenger", "legal@v2", 400, 0.1, rng)
    r = run(app, ["decide", "legal", "--by", "bob"])
    assert r.exit_code == 0 and "reject" in r.output and "(stored)" in r.output
    out = json.loads(run(app, ["decisions", "legal", "--json"]).output)
    assert out["current"] is None and [(d["outcome"], d["actor"]) for d in out["decisions"]] == [("reject", "bob")]
    assert reg.config("legal")["versions"][v2]["status"] == "retired"
    assert run(app, ["challenger", "legal", "--end"]).exit_code == 2  # nothing under test any more


def test_arm_errors_reach_the_error_guardrail(world):
    """The logger's error records (a challenger that fails and is answered by the base) reject it."""
    from serving.events import EventLogger
    settings, store, reg = world
    v1, v2 = _publish(reg, "legal"), _publish(reg, "legal")
    reg.promote("legal", v1)
    reg.set_challenger("legal", v2)
    logger = EventLogger(store)
    for _ in range(30):  # no running loop here: written at once
        logger.log_error("legal", "challenger", "legal@v2", "RuntimeError: the model does not load")
    logger.log_error("legal", "domain", "legal@v1", "RuntimeError: once")
    assert store.arm_errors("legal", since=0) == {"legal@v2": 30, "legal@v1": 1}
    rng = np.random.default_rng(2)
    _impressions(store, "legal", "domain", "legal@v1", 300, 0.3, rng)
    _impressions(store, "legal", "challenger", "legal@v2", 300, 0.3, rng)
    r = Referee(reg, store, DecisionRule.from_settings(settings)).evaluate("legal", "autopilot")
    assert r["outcome"] == "reject" and r["reasons"][0].startswith("guardrail error_rate")
    assert r["stats"]["arms"]["challenger"]["errors"] == 30


def test_promoting_the_challenger_by_hand_ends_its_test(world):
    settings, store, reg = world
    v1, v2 = _publish(reg, "legal"), _publish(reg, "legal")
    reg.promote("legal", v1)
    reg.set_challenger("legal", v2)
    reg.promote("legal", v2)
    assert reg.config("legal")["challenger"] is None
    with pytest.raises(NoTest):
        Referee(reg, store, DecisionRule.from_settings(settings)).current("legal")
    reg.set_challenger("legal", v1)  # the old champion may challenge the new one
    reg.delete_version("legal", v1)
    assert reg.config("legal")["challenger"] is None  # a deleted challenger ends its test
