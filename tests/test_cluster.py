"""The reranker on a real two-node Ray cluster: `ray start --head` and `ray start --address` as separate
nodes on this machine (serving/local_cluster.py), deployed with `serve deploy` from deploy/serve_cluster.yaml.

The head has no CPUs and the `reranker_ingress` resource; the worker has 2 CPUs and `reranker_pool`. So
pool replicas and training jobs can only run on the worker, and the ingress only on the head. The registry
and job records are in one directory that both nodes see. The event store is the CI PostgreSQL
(RERANKER_TEST_PG_URL) when there is one, else a SQLite file in that directory. Ray's state API, not our
own reporting, says which node ran what.
"""
from __future__ import annotations

import json
import os
import shutil
import time

import httpx
import pytest
import yaml

from serving.job_launcher import submission
from serving.local import wait_ready
from serving.local_cluster import LocalCluster, cluster_config, free_port
from state.jobs import JobStore
from state.settings import Settings
from state.store import Store
from tests.conftest import ADMIN_TOKEN, SCIFACT
from tests.test_training_http import TINY

DOMAIN = "cluster-scifact"


@pytest.fixture(scope="module")
def cluster(base_version, tmp_path_factory):
    home = tmp_path_factory.mktemp("cluster-home")
    # the session already exported the base model with these settings: copy it, do not export it again
    shutil.copytree(base_version, home / "models" / "_base" / base_version.name)
    db_url = os.environ.get("RERANKER_TEST_PG_URL") or f"sqlite:///{home / 'reranker.db'}"
    c = LocalCluster(env={"RERANKER_ADMIN_TOKEN": ADMIN_TOKEN})  # a secret: node environment, not the YAML
    try:
        c.start()
        port = free_port()
        config = c.temp_dir / "serve.yaml"
        config.write_text(yaml.safe_dump(cluster_config(port, {
            "RERANKER_HOME": str(home), "RERANKER_DB_URL": db_url, "RERANKER_POOL_NUM_CPUS": "0.5",
            "RERANKER_TRAIN_NUM_CPUS": "1", "RERANKER_REGISTRY_CACHE_TTL_S": "0.5",
            "RERANKER_DATA_ROOTS": json.dumps([str(SCIFACT.parent)])})))
        c.serve_deploy(config)
        c.url, c.home, c.db_url = f"http://127.0.0.1:{port}", home, db_url
        wait_ready(c.url, timeout_s=300)
        yield c
    finally:
        c.stop()
        assert not c.processes(), "the cluster's processes must all be gone"
        c.remove_files()


def test_replicas_are_placed_by_node_resources(cluster):
    head, worker = cluster.node_with("reranker_ingress"), cluster.node_with("reranker_pool")
    assert head != worker
    pool = cluster.actors("ServeReplica:reranker:RerankerPool")
    ingress = cluster.actors("ServeReplica:reranker:Ingress")
    assert pool and ingress
    assert {a["node_id"] for a in pool} == {worker}
    assert {a["node_id"] for a in ingress} == {head}


def test_rerank_through_the_cluster_logs_to_the_shared_store(cluster):
    r = httpx.post(f"{cluster.url}/rerank", timeout=60, json={
        "query": "capital of France", "documents": ["Bananas are yellow.", "Paris is the capital of France."]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["index"] for x in body["results"]] == [1, 0] and body["model"] == "base"
    store = Store(cluster.db_url)  # the ingress on the head wrote it; this process reads it
    try:
        deadline = time.time() + 20
        while not store.has_impression(body["id"]) and time.time() < deadline:
            time.sleep(0.5)
        assert store.has_impression(body["id"])
    finally:
        store.close()


def wait_job(url: str, job_id: str, timeout_s: float = 840) -> dict:
    """Poll the job over a new connection each time: between polls the proxy may close an idle
    keep-alive connection, and a reused one can then be reset mid-request."""
    deadline = time.time() + timeout_s
    while True:
        try:
            rec = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=60).json()
            if rec["status"] in ("succeeded", "failed", "cancelled"):
                return rec
        except httpx.TransportError:
            rec = {"status": "unknown", "stage": "poll failed"}
        assert time.time() < deadline, f"job still {rec['status']}/{rec['stage']}"
        time.sleep(2)


@pytest.mark.skipif(not SCIFACT.is_dir(), reason="needs ../shared/data/scifact")
def test_training_job_runs_on_the_worker_and_its_promoted_version_serves(cluster):
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    r = httpx.post(f"{cluster.url}/v1/domains/{DOMAIN}/train/reranker", headers=auth, timeout=60,
                   json={"beir": str(SCIFACT), "max_queries": 12, "activate": False, "config": TINY})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    rec = wait_job(cluster.url, job_id)
    assert rec["status"] == "succeeded", rec["error"]
    assert rec["version"] == f"{DOMAIN}@v1"

    # Ray ran the job's task (it reserves RERANKER_TRAIN_NUM_CPUS) on the worker, the only node with CPUs
    tasks = cluster.tasks(f"train:{job_id}")
    assert [t["node_id"] for t in tasks] == [cluster.node_with("reranker_pool")]
    assert tasks[0]["required_resources"].get("CPU") == 1

    with httpx.Client(base_url=cluster.url, timeout=60) as c:
        # not activated: the base answers until the promote
        assert c.post(f"/rerank?domain={DOMAIN}", json={"query": "q", "documents": ["a", "b"],
                                                         "user_id": "u"}).json()["model"] == "base"
        r = c.post(f"/v1/domains/{DOMAIN}/promote", headers=auth, json={"version": "v1"})
        assert r.status_code == 200, r.text
        time.sleep(1)  # the ingress' registry cache lives 0.5 s
        models = {c.post(f"/rerank?domain={DOMAIN}", json={"query": "q", "documents": ["a", "b"],
                                                            "user_id": f"user-{i}"}).json()["model"]
                  for i in range(20)}  # 50/50 A/B by user key: some land on the domain arm
        assert f"{DOMAIN}@v1" in models


def test_a_ray_jobs_submission_runs_the_uploaded_entry_point_on_the_worker(cluster):
    """The other way a job starts (RERANKER_RAY_JOBS_ADDRESS): Ray's job server gets the code only as
    working_dir and starts the entry point on a node with `entrypoint_num_cpus` free. A job whose data is
    missing ends quickly: its record says why, written by the uploaded `training.job` on the worker."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    settings = Settings(home=cluster.home, db_url=cluster.db_url, train_num_cpus=1)
    missing = cluster.home / "no-such-beir-dir"
    jobs = JobStore(cluster.home)
    rec = jobs.create("cluster-jobs-api", "reranker", {"data": {"beir": str(missing)}, "train": {}, "activate": False})
    client = JobSubmissionClient(cluster.dashboard_url, headers={"Authorization": f"Bearer {cluster.token}"})
    sub = client.submit_job(**submission(settings, rec["id"]))
    deadline = time.time() + 300
    while not client.get_job_status(sub).is_terminal():
        assert time.time() < deadline, client.get_job_logs(sub)[-2000:]
        time.sleep(1)
    info = client.get_job_info(sub)
    assert info.status == JobStatus.FAILED  # exit 1: the job failed, as its record says
    assert info.runtime_env["working_dir"].startswith("gcs://")  # uploaded, not read from this checkout
    assert info.driver_node_id == cluster.node_with("reranker_pool")
    rec = jobs.get(rec["id"])
    assert rec["status"] == "failed" and str(missing) in rec["error"], rec
