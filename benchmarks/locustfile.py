"""Locust users for the rerank API: SciFact claims with 20-50 passages, several domains, sticky user
keys, and a click (POST /v1/feedback) after some responses. Run through benchmarks/load.py.

Environment: BENCH_DOMAINS (comma list, default scifact,medical,legal), BENCH_FEEDBACK (share of
responses that get a click, default 0.1), BENCH_RPS_PER_USER (a fixed request rate per user, as
benchmarks/soak.py sets it; "max": no pause at all; default: a random 0.2-1.0 s pause).
"""
from __future__ import annotations

import os
import random

from locust import HttpUser, between, constant, constant_throughput, task

from benchmarks.data import scifact_requests

REQUESTS = scifact_requests(int(os.environ.get("BENCH_QUERIES", "100")))
DOMAINS = os.environ.get("BENCH_DOMAINS", "scifact,medical,legal").split(",")
FEEDBACK = float(os.environ.get("BENCH_FEEDBACK", "0.1"))
RATE = os.environ.get("BENCH_RPS_PER_USER")


class RagBackend(HttpUser):
    wait_time = between(0.2, 1.0) if not RATE else constant(0) if RATE == "max" else constant_throughput(float(RATE))

    def on_start(self) -> None:
        self.user_id = f"user-{random.randrange(10**6)}"

    @task
    def rerank(self) -> None:
        body = {**random.choice(REQUESTS), "top_n": 10, "user_id": self.user_id}
        domain = random.choice(DOMAINS)
        with self.client.post(f"/rerank?domain={domain}", json=body, name="/rerank",
                              catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
                return
            out = r.json()
            if len(out.get("results", [])) != 10:
                r.failure("wrong number of results")
                return
        if random.random() < FEEDBACK:
            self.client.post("/v1/feedback", name="/v1/feedback",
                             json={"request_id": out["id"], "clicked": [out["results"][0]["index"]]})
