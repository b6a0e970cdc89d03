"""A training job end to end through the HTTP API on the shared Ray Serve service."""
from __future__ import annotations

import time

import pytest

from tests.conftest import SCIFACT

pytestmark = pytest.mark.skipif(not SCIFACT.is_dir(), reason="needs ../shared/data/scifact")

TINY = {"epochs": 1, "batch_size": 8, "max_length": 96, "negatives_per_query": 1, "random_negatives": 1,
        "eval_k": 10, "dev_fraction": 0.25, "threads": 2,
        "min_gain": -1.0,  # machinery, not quality: 12 training queries cannot show a gain
        "max_ms_per_pair": 1e6, "max_lexical_overhead": 1e6}  # the shared CPU's load decides ms/pair; the gates are still reported


def wait(client, job_id: str, timeout: float = 900) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        rec = client.get(f"/v1/jobs/{job_id}").json()
        if rec["status"] in ("succeeded", "failed", "cancelled"):
            return rec
        time.sleep(2)
    pytest.fail(f"job {job_id} still {rec['status']}/{rec['stage']} after {timeout} s")


def test_train_route_auth_and_validation(service):
    with service.client() as c:
        body = {"beir": str(SCIFACT), "max_queries": 8}
        assert c.post("/v1/domains/scifact/train/reranker", json=body).status_code == 401
        assert c.post("/v1/domains/scifact/train/reranker", json=body,
                      headers={"Authorization": "Bearer nope"}).status_code == 401
        r = c.post("/v1/domains/Bad..Domain/train/reranker", json=body, headers=service.admin)
        assert r.status_code == 422 and "domain" in r.text
        r = c.post("/v1/domains/scifact/train/reranker", json={"config": {"epoch": 2}}, headers=service.admin)
        assert r.status_code == 422
        assert c.get("/v1/jobs/train-nope-123").status_code == 404


def test_job_trains_publishes_and_service_serves_it(service):
    with service.client() as c:
        r = c.post("/v1/domains/scifact-http/train/reranker", headers=service.admin,
                   json={"beir": str(SCIFACT), "max_queries": 16, "activate": True, "config": TINY})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        rec = wait(c, job_id)
        assert rec["status"] == "succeeded", rec.get("error")
        assert rec["version"] == "scifact-http@v1" and rec["stage"] == "done"
        assert {g["gate"] for g in rec["gates"]} == {"quality", "parity", "latency_ms_per_pair", "size_bytes",
                                                     "lexical_overhead"}  # a hybrid model: neural + BM25
        assert rec["sources"]["beir"]["split"] == "train" and "ndcg@10" in rec["metrics"]["candidate"]
        # the export ladder's outcome: the format that won is the last rung tried, the first that passed
        export = rec["export"]
        assert export["ladder"][-1]["passed"] and export["precision"] in ("int8", "fp16", "fp32")
        steps = [p["step"] for p in rec["loss"]]  # the loss the trainer logged, kept in the record
        assert steps and steps == sorted(steps) and steps[0] >= 1 and all(p["loss"] > 0 for p in rec["loss"])
        time.sleep(1)  # the registry cache TTL is 0.5 s
        answers = []
        for i in range(20):  # 50/50 A/B: some user keys land on the domain arm
            answers.append(c.post("/rerank?domain=scifact-http", json={
                "query": "q", "documents": ["a", "b"], "user_id": f"user-{i}"}).json())
        assert "scifact-http@v1" in {a["model"] for a in answers}
        assert all(a["meta"].get("fused") for a in answers)  # the hybrid domain model and the base alike


def test_gate_failure_through_api_and_cancel(service):
    with service.client() as c:
        r = c.post("/v1/domains/scifact-gate/train/reranker", headers=service.admin,
                   json={"beir": str(SCIFACT), "max_queries": 8, "config": {**TINY, "min_gain": 1.0}})
        rec = wait(c, r.json()["job_id"])
        assert rec["status"] == "failed" and "gate quality failed" in rec["error"]
        assert not service.registry.exists("scifact-gate") or not service.registry.config("scifact-gate")["versions"]
        r = c.post("/v1/domains/scifact-gate/train/reranker", headers=service.admin,
                   json={"beir": str(SCIFACT), "max_queries": 8, "config": TINY})
        job_id = r.json()["job_id"]
        assert c.post(f"/v1/jobs/{job_id}/cancel").status_code == 401
        assert c.post(f"/v1/jobs/{job_id}/cancel", headers=service.admin).status_code == 202
        assert wait(c, job_id)["status"] == "cancelled"
