"""Champion vs challenger on the real Ray Serve app (session fixture `service`): three sticky arms over
HTTP with each impression's arm and model, decisions through the API and applied to serving, the kill
switch, the spill pause, the timeline, and the timer that runs rounds on its own (a bare app)."""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi.testclient import TestClient

from state import spill
from state.store import ImpressionEvent, ShownPassage, Store
from tests.test_ab_serve import store  # noqa: F401 - the fixture: the service's own store

DOMAIN = "champ"
DOCS = ["Appeals are heard by the higher court.", "A contract needs an offer.", "Negligence is a tort."]


def _version(service, domain: str) -> str:
    return service.publish_base_copy(domain)


def _settled(store: Store, domain: str, want: int, timeout: float = 20) -> int:
    deadline = time.time() + timeout
    while store.count_impressions(domain) < want and time.time() < deadline:
        time.sleep(0.2)
    return store.count_impressions(domain)


def _synthetic(store: Store, arms: dict[str, tuple[str, float]], n: int, seed: int) -> None:
    """n impressions per arm ({variant: (model, ctr)}), interleaved in time as live traffic is, written
    as the loggers write them straight into the service's store (faster than requests); latencies around
    200 ms, above the real requests', so both arms' p95 come from the same distribution."""
    rng = np.random.default_rng(seed)
    events, ctr = [], {}
    for i in range(n):
        for variant, (model, p) in arms.items():
            e = ImpressionEvent(request_id=uuid.uuid4().hex, domain=DOMAIN, variant=variant, model=model,
                                query=f"q{i}", latency_ms=float(rng.gamma(8, 25.0)), n_documents=2,
                                user_key=f"s{seed}-{variant}-{i}", ts=time.time() + i * 1e-3,
                                shown=[ShownPassage(0, 0, "a", 0.9), ShownPassage(1, 1, "b", 0.1)])
            events.append(e)
            ctr[e.request_id] = p
    store.add_impressions(events)
    for e in events:
        if rng.random() < ctr[e.request_id]:
            store.record_clicks(e.request_id, [0])


def test_three_arms_decision_kill_switch_and_timeline(service, settings, store):
    v1, v2 = _version(service, DOMAIN), _version(service, DOMAIN)
    service.registry.promote(DOMAIN, v1)
    with service.client() as c:
        body = {"version": v2}
        assert c.post(f"/v1/domains/{DOMAIN}/challenger", json=body).status_code == 401
        assert c.post(f"/v1/domains/{DOMAIN}/challenger", json={"version": "v99"},
                      headers=service.admin).status_code == 404
        assert c.post(f"/v1/domains/{DOMAIN}/challenger", json={"version": v1},
                      headers=service.admin).status_code == 409  # the active version cannot challenge itself
        r = c.post(f"/v1/domains/{DOMAIN}/challenger", json={**body, "by": "alice"}, headers=service.admin)
        assert r.status_code == 200, r.text
        assert r.json()["challenger"] == v2
        assert {v["version"]: v["status"] for v in r.json()["versions"]} == {v1: "active", v2: "challenger"}
        r = c.put(f"/v1/domains/{DOMAIN}", json={"base_share": 0.2, "challenger_share": 0.5}, headers=service.admin)
        assert r.status_code == 200 and r.json()["base_share"] == 0.2
        assert c.put(f"/v1/domains/{DOMAIN}", json={"base_share": 1.5}, headers=service.admin).status_code == 422
        time.sleep(1)  # the registry cache TTL is 0.5 s

        before = store.count_impressions(DOMAIN)
        keys = [f"user-{k}" for k in range(300)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: c.post(f"/rerank?domain={DOMAIN}", json={
                "query": f"q {i}", "documents": DOCS, "user_id": keys[i % 300]}).json(), range(600)))
    by_key: dict[str, set[str]] = {}
    for i, a in enumerate(answers):
        by_key.setdefault(keys[i % 300], set()).add(a["variant"])
        assert a["model"] == {"domain": f"{DOMAIN}@{v1}", "challenger": f"{DOMAIN}@{v2}", "base": "base"}[a["variant"]]
    assert all(len(v) == 1 for v in by_key.values()), "a user saw two arms"
    share = {v: sum(a["variant"] == v for a in answers) / 600 for v in ("domain", "challenger", "base")}
    assert 0.12 <= share["base"] <= 0.28 and 0.3 <= share["challenger"] <= 0.5, share
    assert _settled(store, DOMAIN, before + 600) == before + 600
    logged = {(e["request_id"], e["variant"], e["model"]) for e in store.iter_impressions(DOMAIN)}
    assert {(a["id"], a["variant"], a["model"]) for a in answers} <= logged  # each impression: its arm and model

    with service.client() as c:
        r = c.get(f"/v1/domains/{DOMAIN}/decisions").json()
        assert r["current"]["outcome"] == "continue" and r["decisions"] == []
        assert r["current"]["challenger"] == f"{DOMAIN}@{v2}"
        assert "needed" in r["current"]["reasons"][0]
        report = c.get(f"/v1/domains/{DOMAIN}/ab").json()
        assert report["arms"]["challenger"]["models"] == {f"{DOMAIN}@{v2}": round(share["challenger"] * 600)}

        # the kill switch stops automatic rounds; the spill file pauses them and the decide route
        assert c.put("/v1/autopilot/kill", json={"killed": True}).status_code == 401
        assert c.put("/v1/autopilot/kill", json={"killed": True}, headers=service.admin).json()["killed"] is True
        assert c.post("/v1/autopilot/run", headers=service.admin).json()["actions"] == [
            {"domain": None, "action": "none", "reason": "the kill switch is on"}]
        assert c.put("/v1/autopilot/kill", json={"killed": False}, headers=service.admin).json()["killed"] is False
        # held replay lock: the replicas' background replay (serving/replayer.py) leaves the file alone, as it
        # does while another replica replays; without it the replay may store the line before the checks
        with spill._one_replay(settings.spill_path, wait=True):
            settings.spill_path.write_text('{"request_id": "pending"}\n')
            try:
                assert c.get("/v1/autopilot").json()["spill_backlog"] is True
                assert c.post(f"/v1/domains/{DOMAIN}/decide", json={}, headers=service.admin).status_code == 409
                assert "spilling" in c.post("/v1/autopilot/run", headers=service.admin).json()["actions"][0]["reason"]
            finally:
                settings.spill_path.unlink()

        # withdrawn by hand, then tested afresh: the new test counts only what comes after it (the
        # requests above, never clicked, would otherwise make the clicked ones below look like a drift)
        assert c.delete(f"/v1/domains/{DOMAIN}/challenger", headers=service.admin).json()["challenger"] is None
        assert {v["version"]: v["status"] for v in c.get(f"/v1/domains/{DOMAIN}").json()["versions"]}[v2] == "retired"
        assert c.post(f"/v1/domains/{DOMAIN}/challenger", json={"version": v2, "by": "alice"},
                      headers=service.admin).status_code == 200

        # a clearly better challenger: promoted on request, serving follows, the old champion can come back
        _synthetic(store, {"domain": (f"{DOMAIN}@{v1}", 0.2), "challenger": (f"{DOMAIN}@{v2}", 0.4)}, 1500, seed=1)
        r = c.post(f"/v1/domains/{DOMAIN}/decide", json={"by": "alice"}, headers=service.admin)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["outcome"] == "promote" and out["decision"]["actor"] == "alice", out["reasons"]
        assert out["stats"]["metrics"]["ctr"]["cs"][0] > 0
        info = c.get(f"/v1/domains/{DOMAIN}").json()
        assert info["active"] == v2 and info["challenger"] is None
        assert {v["version"]: v["status"] for v in info["versions"]}[v1] == "retired"
        time.sleep(1)
        models = {c.post(f"/rerank?domain={DOMAIN}", json={"query": "q", "documents": DOCS,
                                                           "user_id": f"after-{i}"}).json()["model"] for i in range(30)}
        assert models == {f"{DOMAIN}@{v2}", "base"}
        assert c.post(f"/v1/domains/{DOMAIN}/decide", json={}, headers=service.admin).status_code == 409  # no test
        decisions = c.get(f"/v1/domains/{DOMAIN}/decisions").json()
        assert decisions["current"] is None and [d["outcome"] for d in decisions["decisions"]] == ["promote"]
        events = c.get(f"/v1/domains/{DOMAIN}/timeline").json()["events"]  # newest first
    assert [(e["kind"], e["actor"]) for e in events] == [("decided", "alice"), ("challenged", "alice"),
                                                         ("withdrawn", "admin"), ("challenged", "alice")]
    assert events[0]["summary"].startswith(f"promote {DOMAIN}@{v2} vs {DOMAIN}@{v1}")


def test_autopilot_settings_over_http(service):
    with service.client() as c:
        assert c.get("/v1/domains/quiet/autopilot").json()["enabled"] is False  # off by default
        assert c.put("/v1/domains/quiet/autopilot", json={"enabled": True}).status_code == 401
        bad = c.put("/v1/domains/quiet/autopilot", json={"enabled": True, "min_clicks": 3}, headers=service.admin)
        assert bad.status_code == 422 and "min_clicks" in bad.text
        assert c.put("/v1/domains/quiet/autopilot", json={"min_clicked_queries": 0},
                     headers=service.admin).status_code == 422
        r = c.put("/v1/domains/quiet/autopilot", json={"enabled": True, "min_clicked_queries": 5,
                                                       "window_start_hour": 22, "window_end_hour": 6},
                  headers=service.admin).json()
        assert (r["enabled"], r["min_clicked_queries"], r["min_expert_labels"], r["window_end_hour"]) == (True, 5, 50, 6)
        r = c.put("/v1/domains/quiet/autopilot", json={"window_start_hour": None, "window_end_hour": None},
                  headers=service.admin).json()
        assert r["enabled"] is True and r["window_start_hour"] is None  # only the keys sent changed
        assert "quiet" in c.get("/v1/autopilot").json()["domains"]
        assert c.put("/v1/domains/quiet/autopilot", json={"enabled": False}, headers=service.admin).status_code == 200
        assert "quiet" not in c.get("/v1/autopilot").json()["domains"]


def test_timer_decides_on_its_own(tmp_path):
    """A bare app (no Ray) with a round every 0.2 s: a finished test is decided without any request."""
    from serving.ingress import create_app
    from state.registry import Registry
    from state.settings import Settings

    settings = Settings(home=tmp_path, autopilot_interval_s=0.2, decision_min_exposure=100)
    reg = Registry(settings.registry_root)
    versions = []
    for _ in range(2):
        staged = reg.stage(DOMAIN)
        (staged / "model.onnx").write_bytes(uuid.uuid4().bytes)
        versions.append(reg.publish(DOMAIN, staged, {"kind": "cross-encoder"}))
    reg.promote(DOMAIN, versions[0])
    reg.set_challenger(DOMAIN, versions[1])
    s = Store(settings.database_url)
    _synthetic(s, {"domain": (f"{DOMAIN}@{versions[0]}", 0.4), "challenger": (f"{DOMAIN}@{versions[1]}", 0.1)},
               600, seed=3)
    s.close()
    with TestClient(create_app(settings, scorer=None)) as c:
        deadline = time.time() + 30
        while not (d := c.get(f"/v1/domains/{DOMAIN}/decisions").json()["decisions"]) and time.time() < deadline:
            time.sleep(0.2)
    assert [(x["outcome"], x["actor"]) for x in d] == [("reject", "autopilot")]
    assert reg.config(DOMAIN)["active"] == versions[0] and reg.config(DOMAIN)["challenger"] is None
