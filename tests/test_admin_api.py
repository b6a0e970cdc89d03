"""The admin page's API on the app seam (`create_app` with a fake scorer, no Ray): traffic, the A/B
timeline and intervals, uploads checked by training's own readers, the label queue, the page's headers."""
from __future__ import annotations

import io
import json
import re
import zipfile
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from serving.ingress import create_app
from serving.routes.admin import PAGE_DIR
from state.registry import Registry
from state.settings import Settings
from tests.test_app_seam import DOCS, WordOverlap, publish_fake
from training.sources.labels import load_labels

TOKEN = "page-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings(tmp_path):
    return Settings(home=tmp_path, admin_token=TOKEN, max_documents=5, registry_cache_ttl_s=0,
                    max_data_upload_bytes=20_000)


@pytest.fixture
def client(settings):
    publish_fake(Registry(settings.registry_root), "legal", 1.0)
    with TestClient(create_app(settings, WordOverlap())) as c:
        yield c


def traffic(c, domain: str, queries: list[str], clicks: bool = False) -> list[str]:
    ids = []
    for i, q in enumerate(queries):
        r = c.post(f"/rerank?domain={domain}", json={"query": q, "documents": DOCS, "user_id": f"u{i}"})
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
        if clicks:  # feedback flushes the event logger: everything logged so far is stored after it
            assert c.post("/v1/feedback", json={"request_id": ids[-1], "clicked": [1]}).status_code == 200
    return ids


def test_traffic_timeline_and_intervals(client):
    traffic(client, "legal", ["capital of France"] * 4, clicks=True)
    traffic(client, "medical", ["q"], clicks=True)
    t = client.get("/v1/traffic").json()
    counts = {d["domain"]: (d["last_hour"], d["last_day"], d["total"]) for d in t["domains"]}
    assert counts == {"legal": (4, 4, 4), "medical": (1, 1, 1)}
    tl = client.get("/v1/domains/legal/ab/timeline", params={"bucket_s": 600}).json()
    assert len(tl["buckets"]) == 144 and tl["bucket_s"] == 600
    assert sum(b["domain"]["impressions"] for b in tl["buckets"]) == 4  # split 1.0: all on the domain arm
    assert tl["buckets"][-1]["domain"] == {"impressions": 4, "clicks": 4}
    r = client.get("/v1/domains/legal/ab/timeline", params={"bucket_s": 60, "since": 0})
    assert r.status_code == 422 and "buckets" in r.json()["error"]
    assert client.get("/v1/domains/legal/ab/timeline", params={"bucket_s": 1}).status_code == 422
    arm = client.get("/v1/domains/legal/ab").json()["arms"]["domain"]
    assert arm["ctr"] == 1.0 and arm["ctr_ci95"][1] == pytest.approx(1.0) and arm["ctr_ci95"][0] < 1.0


def test_label_queue_grades_summary_and_export(client, tmp_path):
    traffic(client, "legal", ["capital of France", "capital of France", "yellow fruit"], clicks=True)
    assert client.get("/v1/domains/legal/labels/queue").status_code == 401
    q = client.get("/v1/domains/legal/labels/queue", headers=AUTH, params={"passages": 3}).json()
    assert [i["query"] for i in q["items"]] == ["capital of France", "yellow fruit"]
    item = q["items"][0]
    assert item["impressions"] == 2 and [p["text"] for p in item["passages"]][0] == DOCS[1]
    body = {"query": item["query"], "labeller": "Ann Expert",
            "labels": [{"passage_id": p["passage_id"], "relevance": g} for p, g in zip(item["passages"], (5, 1, 2))]}
    assert client.post("/v1/domains/legal/labels", json=body).status_code == 401
    r = client.post("/v1/domains/legal/labels", json={**body, "labeller": " "}, headers=AUTH)
    assert r.status_code == 422 and "labeller" in r.text
    r = client.post("/v1/domains/legal/labels", json={**body, "labels": [{"passage_id": "0" * 64, "relevance": 3}]},
                    headers=AUTH)
    assert r.status_code == 422 and "labels.0.passage_id" in r.json()["error"]
    r = client.post("/v1/domains/legal/labels", headers=AUTH,
                    json={**body, "labels": [{"passage_id": item["passages"][0]["passage_id"], "relevance": "5"}]})
    assert r.status_code == 422  # strict: "5" is not a grade
    r = client.post("/v1/domains/legal/labels", json=body, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"domain": "legal", "stored": 3, "labeller": "Ann Expert"}
    s = client.get("/v1/domains/legal/labels/summary").json()
    assert (s["labels"], s["queries"], s["labellers"]) == (3, 1, {"Ann Expert": 3})
    q = client.get("/v1/domains/legal/labels/queue", headers=AUTH, params={"passages": 3}).json()
    assert [i["query"] for i in q["items"]] == ["yellow fruit"]  # the graded query left the queue
    assert client.get("/v1/domains/legal/labels/export").status_code == 401
    exported = client.get("/v1/domains/legal/labels/export", headers=AUTH)
    assert exported.headers["content-type"].startswith("text/csv")
    path = tmp_path / "exported.csv"
    path.write_text(exported.text)
    examples, stats = load_labels(path)  # the file training reads
    assert stats["relevance"] == {"1": 1, "2": 1, "3": 0, "4": 0, "5": 1}
    assert {e.passage: e.label for e in examples}[DOCS[1]] == 5
    lines = client.get("/v1/domains/legal/labels/export", headers=AUTH, params={"format": "jsonl"}).text.splitlines()
    assert sorted(json.loads(x)["relevance"] for x in lines) == [1, 2, 5]


def post_upload(c, kind: str, name: str, data: bytes, headers=AUTH):
    return c.post("/v1/domains/legal/uploads", data={"kind": kind}, files={"file": (name, data)}, headers=headers)


RAGAS_OK = (json.dumps({"question": "What is the capital of France?", "contexts": ["Paris is the capital of France.",
                                                                                  "Bananas are yellow."],
                        "ground_truth": "Paris is the capital of France."}) + "\n").encode()


def beir_zip(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    return buf.getvalue()


BEIR = {"mini/corpus.jsonl": '{"_id": "d1", "title": "Paris", "text": "capital of France"}\n'
                             '{"_id": "d2", "title": "Banana", "text": "a yellow fruit"}\n',
        "mini/queries.jsonl": '{"_id": "q1", "text": "capital of France?"}\n',
        "mini/qrels/train.tsv": "query-id\tcorpus-id\tscore\nq1\td1\t1\n"}


def test_uploads_are_checked_stored_and_listed(client, settings):
    assert post_upload(client, "ragas", "eval.jsonl", RAGAS_OK, headers={}).status_code == 401
    r = post_upload(client, "ragas", "eval.jsonl", RAGAS_OK)
    assert r.status_code == 201, r.text
    up = r.json()
    assert up["kind"] == "ragas" and up["filename"] == "eval.jsonl" and up["stats"]["pairs"] == 2
    stored = settings.home / "uploads" / "legal" / up["id"] / "eval.jsonl"
    assert stored.read_bytes() == RAGAS_OK
    r = post_upload(client, "ragas", "bad.jsonl", RAGAS_OK + b'{"question": "q", "contexts": "nope"}\n')
    assert r.status_code == 422 and r.json()["error"].startswith("file: bad.jsonl:2: ")
    assert str(settings.home) not in r.text  # no server path in the message
    r = post_upload(client, "labels", "grades.csv", b"query,document,relevance\nq,d,4\nq,e,9\n")
    assert r.status_code == 422 and "grades.csv:3: relevance '9'" in r.json()["error"]
    assert post_upload(client, "labels", "grades.csv", b"query,document,relevance\nq,d,4\n").status_code == 201
    r = post_upload(client, "labels", "grades.xlsx", b"x")
    assert r.status_code == 422 and ".csv" in r.json()["error"]
    r = post_upload(client, "beir", "mini.zip", beir_zip(BEIR))
    assert r.status_code == 201, r.text
    assert r.json()["stats"]["splits"] == {"train": {"queries": 1, "pairs": 1}}
    bad = {**BEIR, "mini/qrels/train.tsv": "query-id\tcorpus-id\tscore\nq1\td9\t1\n"}
    r = post_upload(client, "beir", "mini.zip", beir_zip(bad))
    assert r.status_code == 422 and "mini.zip/qrels/train.tsv:2: corpus id 'd9'" in r.json()["error"]
    r = post_upload(client, "beir", "evil.zip", beir_zip({**BEIR, "../escape.txt": "x"}))
    assert r.status_code == 422 and "escapes" in r.json()["error"]
    assert post_upload(client, "beir", "notzip.zip", b"plain text").status_code == 422
    assert post_upload(client, "gold", "x.jsonl", RAGAS_OK).status_code == 422
    r = post_upload(client, "ragas", "big.jsonl", RAGAS_OK * 200)  # over max_data_upload_bytes
    assert r.status_code == 413 and "limit" in r.json()["error"]
    listed = client.get("/v1/domains/legal/uploads").json()["uploads"]
    assert sorted(u["kind"] for u in listed) == ["beir", "labels", "ragas"]  # refused ones left nothing
    assert not list((settings.home / "uploads" / "legal" / ".staging").iterdir())
    assert client.delete(f"/v1/domains/legal/uploads/{up['id']}", headers=AUTH).status_code == 200
    assert not stored.exists()
    assert client.delete("/v1/domains/legal/uploads/u-../../x", headers=AUTH).status_code in (404, 422)


def test_train_request_resolves_uploads(client):
    beir = post_upload(client, "beir", "mini.zip", beir_zip(BEIR)).json()["id"]
    r = client.post("/v1/domains/legal/train/reranker", headers=AUTH, json={"uploads": ["u-000000000000"]})
    assert r.status_code == 422 and "uploads.0: unknown upload" in r.json()["error"]
    r = client.post("/v1/domains/legal/train/reranker", headers=AUTH, json={"uploads": [beir], "beir": "/x"})
    assert r.status_code == 422 and "one BEIR source" in r.json()["error"]
    r = client.post("/v1/domains/other/train/reranker", headers=AUTH, json={"uploads": [beir]})
    assert r.status_code == 422  # another domain's upload


def test_training_options_come_from_training(client):
    d = client.get("/v1/training/options").json()["defaults"]
    assert {"epochs", "batch_size", "learning_rate", "min_gain", "max_queries"} <= set(d)
    assert isinstance(d["epochs"], float) and d["max_queries"] is None


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_page_is_served_with_a_strict_csp_and_no_inline_code(client):
    r = client.get("/admin")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    p = _Tags()
    p.feed(r.text)
    scripts = [a for t, a in p.tags if t == "script"]
    assert scripts and all(a.get("src") for a in scripts)  # no inline script
    assert not [t for t, a in p.tags if "style" in a or any(k.startswith("on") for k in a)]
    assert "<style" not in r.text
    for t, a in p.tags:  # nothing loads from elsewhere
        for k in ("src", "href"):
            assert not re.match(r"^(https?:)?//", a.get(k) or ""), (t, a)
    for path in PAGE_DIR.rglob("*.js"):
        if "vendor" not in path.parts:
            text = path.read_text()
            assert not re.search(r"\son[a-z]+=|innerHTML|setAttribute\(['\"]style|eval\(|new Function", text), path
    js = client.get("/admin/static/js/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert js.headers["x-content-type-options"] == "nosniff"
    assert client.get("/admin/static/vendor/chart.umd.min.js").status_code == 200
    assert client.get("/admin/static/../ingress.py").status_code == 404


def test_admin_check(client):
    assert client.get("/v1/admin/check").status_code == 401
    assert client.get("/v1/admin/check", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/v1/admin/check", headers=AUTH).json() == {"admin": True}
