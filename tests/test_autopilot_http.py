"""The autopilot against the real service with a tiny training configuration: a domain trained once by
hand retrains on its own once enough clicked queries arrived, one job at a time, never while the kill
switch is on, and its published version enters as the challenger; the timeline says who did what."""
from __future__ import annotations

import re
import time

import pytest

from tests.conftest import SCIFACT
from tests.test_training_http import TINY, wait

pytestmark = pytest.mark.skipif(not SCIFACT.is_dir(), reason="needs ../shared/data/scifact")

DOMAIN = "auto-sci"
DOCS = ["Fever is a rise in body temperature.", "Vaccines train the immune system.", "Bones hold calcium."]


def _round(c, admin) -> dict[str, str]:
    """One autopilot round now: {action: reason} of this domain (at most one action per domain)."""
    r = c.post("/v1/autopilot/run", headers=admin)
    assert r.status_code == 200, r.text
    return {a["action"]: a["reason"] for a in r.json()["actions"] if a["domain"] in (DOMAIN, None)}


def test_autopilot_retrains_on_new_clicks_and_challenges(service):
    admin = service.admin
    with service.client() as c:
        r = c.post(f"/v1/domains/{DOMAIN}/train/reranker", headers=admin,
                   json={"beir": str(SCIFACT), "max_queries": 8, "activate": True, "config": TINY})
        assert r.status_code == 202, r.text
        assert wait(c, r.json()["job_id"])["status"] == "succeeded"
        r = c.put(f"/v1/domains/{DOMAIN}/autopilot", headers=admin,
                  json={"enabled": True, "min_clicked_queries": 2, "min_expert_labels": 1000})
        assert r.status_code == 200 and r.json()["enabled"] is True
        assert "0/2 new clicked queries" in _round(c, admin)["waiting"]

        time.sleep(1)  # the registry cache TTL is 0.5 s
        for q in ("what causes fever", "how do vaccines work"):
            r = c.post(f"/rerank?domain={DOMAIN}", json={"query": q, "documents": DOCS, "user_id": q})
            assert c.post("/v1/feedback", json={"request_id": r.json()["id"], "clicked": [0]}).status_code == 200

        c.put("/v1/autopilot/kill", json={"killed": True}, headers=admin)
        try:
            assert _round(c, admin) == {"none": "the kill switch is on"}
            assert len(c.get("/v1/jobs", params={"domain": DOMAIN}).json()["jobs"]) == 1  # nothing started
        finally:
            c.put("/v1/autopilot/kill", json={"killed": False}, headers=admin)

        started = _round(c, admin)["started"]
        assert "2/2 new clicked queries" in started
        job_id = re.match(r"job (\S+)", started).group(1)
        assert _round(c, admin) == {"waiting": "a training job of this domain is running"}  # one per domain
        rec = wait(c, job_id)
        assert rec["status"] == "succeeded", rec.get("error")
        assert rec["version"] == f"{DOMAIN}@v2"
        assert c.get(f"/v1/domains/{DOMAIN}").json()["active"] == "v1"  # an automatic job never activates

        assert _round(c, admin)["challenged"] == f"{DOMAIN}@v2 challenges {DOMAIN}@v1"
        info = c.get(f"/v1/domains/{DOMAIN}").json()
        assert (info["active"], info["challenger"]) == ("v1", "v2")
        current = c.get(f"/v1/domains/{DOMAIN}/decisions").json()["current"]
        assert current["challenger"] == f"{DOMAIN}@v2" and current["outcome"] == "continue"
        assert _round(c, admin)["waiting"] == "a challenger is under test"  # no retraining during a test
        events = c.get(f"/v1/domains/{DOMAIN}/timeline").json()["events"]
        assert [(e["kind"], e["actor"]) for e in events] == [
            ("challenged", "autopilot"), ("trained", "autopilot"), ("training", "autopilot"),
            ("trained", "admin"), ("training", "admin")]
        assert c.put(f"/v1/domains/{DOMAIN}/autopilot", json={"enabled": False}, headers=admin).status_code == 200
        assert c.delete(f"/v1/domains/{DOMAIN}/challenger", headers=admin).status_code == 200
