"""Hostile input on the app's seam (`create_app` with the fake scorer, no Ray): each case gets its
expected status, and then nothing is stored for it and nothing else is lost: every good answer
around it has exactly one impression, /metrics still answers, the registry and the spill and
quarantine files are untouched.

Uploads use the real base model's files (the `base_version` fixture) and the real load check.
"""
from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
import tempfile
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.ingress import create_app
from serving.upload import publish_upload
from state.jobs import JobStore
from state.registry import Registry
from state.settings import Settings
from state.store import Store
from tests.test_app_seam import WordOverlap, publish_fake

TOKEN = "hostile-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD = {"query": "capital of France", "documents": ["Paris is the capital of France.", "Bananas."]}
ABS_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.@+-]+/)+")  # any absolute path in an answer
MAX_UNPACKED = 80_000_000  # the base version (both engines) unpacks to about half of this


@pytest.fixture
def app_settings(tmp_path):
    return Settings(home=tmp_path, admin_token=TOKEN, max_documents=5, max_body_bytes=10_000,
                    registry_cache_ttl_s=0, max_upload_unpacked_bytes=MAX_UNPACKED, max_upload_members=50)


@pytest.fixture
def client(app_settings):
    publish_fake(Registry(app_settings.registry_root), "legal", 1.0)
    with TestClient(create_app(app_settings, WordOverlap())) as c:
        yield c


def impressions(settings: Settings) -> int:
    store = Store(settings.database_url)
    try:
        return store.count_impressions()
    finally:
        store.close()


def chunked(data: bytes, size: int = 4096):
    for i in range(0, len(data), size):
        yield data[i:i + size]


# (name, method, path, request kwargs, expected status, the field the error names or None)
CASES = [
    ("lone surrogate in the body's domain", "post", "/rerank", {"json": {**GOOD, "domain": "\ud800"}}, 422, "domain"),
    ("lone surrogate in user_id", "post", "/rerank", {"json": {**GOOD, "user_id": "\ud800"}}, 422, "user_id"),
    ("lone surrogate in the query", "post", "/v1/rerank", {"json": {**GOOD, "query": "q\udfff"}}, 422, "query"),
    ("lone surrogate in a document", "post", "/v2/rerank",
     {"json": {"query": "q", "documents": ["a", "b\ud800"]}}, 422, "documents.1"),
    ("lone surrogate in a document id", "post", "/rerank",
     {"json": {"query": "q", "documents": [{"id": "\udc00", "text": "a"}], "return_documents": True}},
     422, "documents.0.id"),
    ("lone surrogate in a metadata key", "post", "/rerank",
     {"json": {"query": "q", "documents": [{"text": "a", "meta": {"\ud800": 1}}]}}, 422, "documents.0.meta"),
    ("lone surrogate in feedback", "post", "/v1/feedback", {"json": {"request_id": "x", "clicked": ["\ud800"]}},
     422, "clicked.0"),
    ("top_n as a string", "post", "/rerank", {"json": {**GOOD, "top_n": "1"}}, 422, "top_n"),
    ("top_n as a bool", "post", "/rerank", {"json": {**GOOD, "top_n": True}}, 422, "top_n"),
    ("return_documents as a string", "post", "/rerank", {"json": {**GOOD, "return_documents": "yes"}}, 422,
     "return_documents"),
    ("user_id longer than the store's column", "post", "/rerank", {"json": {**GOOD, "user_id": "u" * 201}}, 422,
     "user_id"),
    ("X-User-Id longer than the store's column", "post", "/rerank",
     {"json": GOOD, "headers": {"X-User-Id": "u" * 201}}, 422, "x-user-id"),
    ("document id longer than the store's column", "post", "/rerank",
     {"json": {"query": "q", "documents": [{"id": "i" * 501, "text": "a"}]}}, 422, "documents.0"),
    ("malformed JSON", "post", "/rerank", {"content": b'{"query": "q", "documents": [',
                                           "headers": {"content-type": "application/json"}}, 400, None),
    ("JSON nested 4,000 deep", "post", "/rerank", {"content": b"[" * 4000 + b"]" * 4000,
                                                   "headers": {"content-type": "application/json"}}, 400, None),
    ("JSON over the body limit", "post", "/rerank", {"content": b"[" * 100_000 + b"]" * 100_000,
                                                     "headers": {"content-type": "application/json"}}, 413, None),
    ("chunked body over the limit", "post", "/rerank",
     {"content": chunked(json.dumps({"query": "q", "documents": ["x" * 20_000]}).encode()),
      "headers": {"content-type": "application/json"}}, 413, None),
    ("ab_split as a string", "put", "/v1/domains/legal", {"json": {"ab_split": "0.5"}, "headers": AUTH}, 422,
     "ab_split"),
    ("PUT of an unknown domain", "put", "/v1/domains/nosuch", {"json": {"ab_split": 0.5}, "headers": AUTH}, 404,
     None),
    ("rollback of an unknown domain", "post", "/v1/domains/nosuch/rollback", {"headers": AUTH}, 404, None),
    ("DELETE of a missing version", "delete", "/v1/domains/legal/versions/v9", {"headers": AUTH}, 404, None),
    ("DELETE in an unknown domain", "delete", "/v1/domains/nosuch/versions/v1", {"headers": AUTH}, 404, None),
    ("training flag as a string", "post", "/v1/domains/legal/train/reranker",
     {"json": {"search_logs": True, "activate": "true"}, "headers": AUTH}, 422, "activate"),
    ("training without the token", "post", "/v1/domains/legal/train/reranker", {"json": {"search_logs": True}},
     401, None),
]


@pytest.mark.parametrize("name,method,path,kw,status,field", CASES, ids=[c[0] for c in CASES])
def test_hostile_request_is_refused_and_costs_nothing(client, app_settings, name, method, path, kw, status, field):
    before = Registry(app_settings.registry_root).describe("legal")
    ok_ids = [client.post("/rerank?domain=legal", json=GOOD, headers={"X-User-Id": "a"}).json()["id"]]
    if "json" in kw:  # as escapes: a client library would refuse to encode a lone surrogate itself
        kw = {"content": json.dumps(kw["json"]).encode(),
              "headers": {"content-type": "application/json", **kw.get("headers", {})}}
    r = getattr(client, method)(path, **kw)
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body["error"], str) and body["error"]
    if field is not None:
        assert field in [d["field"] for d in body["detail"]], body
    ok_ids.append(client.post("/rerank?domain=legal", json=GOOD, headers={"X-User-Id": "b"}).json()["id"])
    assert client.get("/metrics").status_code == 200
    assert Registry(app_settings.registry_root).describe("legal") == before
    assert Registry(app_settings.registry_root).domains() == ["legal"]
    assert not (app_settings.registry_root / "nosuch").exists()
    client.portal.call(client.app.state.events.flush)  # the app's logger has written what it queued
    assert impressions(app_settings) == 2  # the two good answers, once each; nothing for the hostile one
    store = Store(app_settings.database_url)
    try:
        assert all(store.has_impression(i) for i in ok_ids)
    finally:
        store.close()
    assert not app_settings.spill_path.exists() and not app_settings.quarantine_path.exists()
    assert not list(app_settings.home.glob("jobs/*.json"))


def test_a_valid_surrogate_pair_and_nul_are_text(client, app_settings):
    """An emoji written as two escapes is one valid code point; NUL is stored as U+FFFD (PostgreSQL
    text cannot hold it), never failing the batch."""
    r = client.post("/rerank?domain=legal", content=b'{"query": "caf\\u00e9 \\ud83d\\ude00", "documents": '
                    b'["a\\u0000b", "c"], "return_documents": true}', headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert {x["document"]["text"] for x in r.json()["results"]} == {"a\x00b", "c"}
    client.portal.call(client.app.state.events.flush)
    store = Store(app_settings.database_url)
    try:
        [imp] = list(store.iter_impressions("legal"))
    finally:
        store.close()
    assert imp["query"] == "caf\u00e9 \U0001F600"
    assert {s["text"] for s in imp["shown"]} == {"a\ufffdb", "c"}


def labels(text: str) -> set[str]:
    return set(re.findall(r'^reranker_\w+\{domain="([^"]*)"', text, re.M))


def test_metrics_labels_are_bounded_and_valid(client):
    before = labels(client.get("/metrics").text)  # the registry is per process: other tests' labels too
    for i in range(100):
        assert client.post(f"/rerank?domain=made-up-{i}", json=GOOD).status_code == 200
    client.post("/rerank", content=json.dumps({**GOOD, "domain": "\ud800"}), headers={"content-type": "application/json"})
    client.post("/rerank?domain=legal", json={"query": "q", "documents": ["a"] * 6})  # over max_documents
    r = client.get("/metrics")
    assert r.status_code == 200
    assert labels(r.text) - before <= {"_other", "legal"}, labels(r.text) - before
    assert "made-up" not in r.text
    assert 'reranker_errors_total{domain="legal",status="422"}' in r.text


def test_domains_exist_only_once_created(client, app_settings):
    assert client.put("/v1/domains/fresh", json={"ab_split": 0.2}, headers=AUTH).status_code == 404
    r = client.post("/v1/domains", json={"domain": "fresh", "ab_split": 0.2}, headers=AUTH)
    assert r.status_code == 201 and r.json() == {"domain": "fresh", "active": None, "ab_split": 0.2, "versions": [],
                                                 "challenger": None, "challenger_since": None, "base_share": None,
                                                 "challenger_share": None}
    assert client.post("/v1/domains", json={"domain": "fresh"}, headers=AUTH).status_code == 409
    assert client.post("/v1/domains", json={"domain": "fresh"}).status_code == 401
    assert client.post("/v1/domains", json={"domain": "Bad!"}, headers=AUTH).status_code == 422
    assert client.put("/v1/domains/fresh", json={"ab_split": 0.7}, headers=AUTH).json()["ab_split"] == 0.7
    assert [d["domain"] for d in client.get("/v1/domains").json()["domains"]] == ["fresh", "legal"]


def test_answers_hold_no_server_paths(client, app_settings):
    """Job records (sources, errors) and version manifests keep paths on the server only."""
    jobs = JobStore(app_settings.home)
    rec = jobs.create("legal", "reranker", {"data": {"beir": "/srv/data/scifact"}})
    jobs.update(rec["id"], ray_job_id="pid:4242", status="failed",
                sources={"beir": {"dir": "/srv/data/scifact", "split": "train"}},
                error="FileNotFoundError: /srv/data/scifact/qrels/train.tsv")
    for r in (client.get(f"/v1/jobs/{rec['id']}"), client.get("/v1/jobs")):
        assert r.status_code == 200
        assert not ABS_PATH.search(r.text) and "4242" not in r.text, r.text
    job = client.get(f"/v1/jobs/{rec['id']}").json()
    assert job["sources"]["beir"]["dir"] == "scifact" and job["error"].endswith("train.tsv")
    reg = Registry(app_settings.registry_root)
    reg.mark_failed("legal", "v1", "cannot load /srv/var/models/legal/v1/model.onnx")
    assert not ABS_PATH.search(client.get("/v1/domains/legal").text)


# ---- uploads ------------------------------------------------------------------------------------
def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def base_files(base_version) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(base_version).iterdir()) if p.is_file()}


def bomb_header(size: int) -> bytes:
    """A gzip of one tar header that declares `size` bytes: what a bomb looks like when read."""
    info = tarfile.TarInfo("model.onnx")
    info.size = size
    return gzip.compress(info.tobuf())


def with_manifest(version: dict[str, bytes], **changes) -> dict[str, bytes]:
    man = json.loads(version["manifest.json"])
    man.update(changes)
    return {**version, "manifest.json": json.dumps(man).encode()}


def sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def upload_cases(files: dict[str, bytes]) -> list[tuple[str, bytes, str]]:
    good = tar_gz(files)
    engine = {k: v for k, v in files.items() if k != "manifest.json"}
    declared = {k: sha(v) for k, v in engine.items()}
    wrong = {**declared, "model.onnx": "0" * 64}
    return [
        ("truncated tar.gz", good[: len(good) // 2], "truncated or corrupt"),
        ("not gzip at all", b"PK\x03\x04 a zip, not a tar.gz", "truncated or corrupt"),
        ("empty body", b"", "truncated or corrupt"),
        ("a header declaring 10 GB", bomb_header(10 ** 10), f"more than {MAX_UNPACKED} bytes"),
        ("real zeros over the cap", tar_gz({"zeros.bin": bytes(MAX_UNPACKED + 1)}), f"more than {MAX_UNPACKED}"),
        ("too many members", tar_gz({f"f{i}.txt": b"" for i in range(51)}), "more than 50 members"),
        ("wrong declared sha256", tar_gz(with_manifest(files, files=wrong)), "sha256 mismatch for model.onnx"),
        ("a declared file missing", tar_gz(with_manifest({k: v for k, v in files.items() if k != "config.json"},
                                                         files=declared)), "listed but not sent: config.json"),
        ("garbage model.onnx beside valid OpenVINO files", tar_gz({**files, "model.onnx": b"not a graph"}),
         "model.onnx does not load"),
        ("garbage OpenVINO beside a valid model.onnx", tar_gz({**files, "openvino_model.bin": b"nope"}),
         "openvino_model.xml does not load"),
        ("half an OpenVINO pair", tar_gz({k: v for k, v in files.items() if k != "openvino_model.bin"}),
         "without openvino_model.bin"),
        ("manifest not an object", tar_gz({**files, "manifest.json": b"[1, 2]"}), "must be a JSON object"),
        ("path traversal", tar_gz({**files, "../evil.txt": b"x"}), "escapes the archive"),
    ]


def test_every_broken_upload_is_a_clear_400_and_leaves_nothing(client, app_settings, base_files, tmp_path, monkeypatch):
    assert "openvino_model.xml" in base_files  # the engine pair is what some cases break
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the route unpacks uploads
    for name, data, why in upload_cases(base_files):
        r = client.post("/v1/domains/up/versions", content=data, headers={**AUTH, "content-type": "application/gzip"})
        assert r.status_code == 400, (name, r.text)
        assert why in r.json()["error"], (name, r.json())
        assert not ABS_PATH.search(r.text), (name, r.text)
        assert not (app_settings.registry_root / "up").exists(), name  # no domain, no `.staging/` leftover
    assert not any(scratch.iterdir())  # every upload's work area removed


def test_a_good_upload_with_declared_hashes_publishes(client, app_settings, base_files, monkeypatch):
    from serving.routes import models

    threads = []

    def recording(*args, **kw):  # unpacking and load checks must not run on the event loop's thread
        threads.append(threading.get_ident())
        return publish_upload(*args, **kw)

    monkeypatch.setattr(models, "publish_upload", recording)
    declared = {k: sha(v) for k, v in base_files.items() if k != "manifest.json"}
    r = client.post("/v1/domains/up/versions?activate=true", content=tar_gz(with_manifest(base_files, files=declared)),
                    headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["model_id"] == "up@v1"
    reg = Registry(app_settings.registry_root)
    assert reg.manifest("up", "v1")["files"] == declared
    reg.verify("up", "v1")
    assert not (app_settings.registry_root / "up" / ".staging").exists()
    assert threads and threads[0] != client.portal.call(threading.get_ident)
