"""Domain versions over real HTTP: push, promote under load, failures, LRU eviction, upload safety."""
from __future__ import annotations

import io
import json
import tarfile
import threading
import time

import pytest

from tests.conftest import make_tarball

QUERY = {"query": "What is the capital of France?",
         "documents": ["Bananas are yellow.", "Paris is the capital of France.", "Stocks fell today."]}


@pytest.fixture(scope="module")
def version_tar(base_version, tmp_path_factory):
    """A valid exported version (the int8 MiniLM) packed as an upload."""
    return make_tarball(base_version, tmp_path_factory.mktemp("upload") / "version.tar.gz")


def upload(c, service, domain, tar, activate=False):
    return c.post(f"/v1/domains/{domain}/versions", params={"activate": activate}, content=tar.read_bytes(),
                  headers={**service.admin, "content-type": "application/gzip"})


def only_domain_arm(c, service, domain):
    r = c.put(f"/v1/domains/{domain}", json={"ab_split": 1.0}, headers=service.admin)
    assert r.status_code == 200, r.text


def rerank(c, domain):
    r = c.post(f"/rerank?domain={domain}", json=QUERY)
    assert r.status_code == 200, r.text
    return r.json()


def test_push_activate_then_promote_under_load(service, version_tar):
    with service.client() as c:
        r = upload(c, service, "hot", version_tar, activate=True)
        assert r.status_code == 201, r.text
        assert r.json()["model_id"] == "hot@v1"
        only_domain_arm(c, service, "hot")
        time.sleep(1)
        body = rerank(c, "hot")
        assert body["model"] == "hot@v1" and body["variant"] == "domain"
        assert body["results"][0]["index"] == 1
        assert upload(c, service, "hot", version_tar).json()["version"] == "v2"

        # (sent at, answered at, status, model) of every background request
        seen: list[tuple[float, float, int, str]] = []
        stop = threading.Event()

        def client_loop():
            with service.client() as bg:
                while not stop.is_set():
                    sent = time.monotonic()
                    resp = bg.post("/rerank?domain=hot", json=QUERY)
                    seen.append((sent, time.monotonic(), resp.status_code,
                                 resp.json().get("model", "") if resp.status_code == 200 else resp.text))

        t = threading.Thread(target=client_loop)
        t.start()
        time.sleep(1.5)
        promote_sent = time.monotonic()
        r = c.post("/v1/domains/hot/promote", json={"version": "2"}, headers=service.admin)
        promote_done = time.monotonic()
        assert r.status_code == 200, r.text
        time.sleep(3)
        stop.set()
        t.join()
    failures = [s for s in seen if s[2] != 200]
    assert not failures, failures[:3]
    # the promote returns once the pool has v2 loaded and the ingress switched: every request sent
    # after it returned is answered by v2 (one ingress replica; more would add the registry cache TTL)
    after = [m for sent, _, _, m in seen if sent > promote_done]
    assert after and all(m == "hot@v2" for m in after), after[:5]
    assert any(m == "hot@v1" for _, answered, _, m in seen if answered < promote_sent)


def test_corrupt_version_is_refused_and_previous_keeps_serving(service, version_tar):
    with service.client() as c:
        upload(c, service, "corrupt", version_tar, activate=True)
        only_domain_arm(c, service, "corrupt")
        assert upload(c, service, "corrupt", version_tar).json()["version"] == "v2"
        onnx_file = service.registry.version_dir("corrupt", "v2") / "model.onnx"
        onnx_file.write_bytes(onnx_file.read_bytes()[:1000])
        r = c.post("/v1/domains/corrupt/promote", json={"version": "v2"}, headers=service.admin)
        assert r.status_code == 409 and "sha256" in r.json()["error"]
        info = c.get("/v1/domains/corrupt").json()
        assert info["active"] == "v1"
        assert {v["version"]: v["status"] for v in info["versions"]}["v2"] == "failed"
        time.sleep(1)
        assert rerank(c, "corrupt")["model"] == "corrupt@v1"


def test_version_that_fails_to_load_in_the_pool_falls_back(service, version_tar, tmp_path):
    """A version whose files verify but do not load: marked failed, previous version serves again."""
    reg = service.registry
    with service.client() as c:
        upload(c, service, "badload", version_tar, activate=True)
        only_domain_arm(c, service, "badload")
    broken = tmp_path / "broken"
    broken.mkdir()
    engine_files = ("model.onnx", "openvino_model.xml", "openvino_model.bin")
    for p in service.registry.version_dir("badload", "v1").iterdir():
        (broken / p.name).write_bytes(b"not a model graph" if p.name in engine_files else p.read_bytes())
    manifest = json.loads((broken / "manifest.json").read_text())
    del manifest["files"]  # its hashes describe v1's files, and would (rightly) refuse these
    (broken / "manifest.json").write_text(json.dumps(manifest))
    assert reg.publish_dir("badload", broken, activate=True) == "v2"  # no load check on this path
    time.sleep(1)
    with service.client() as c:
        first = rerank(c, "badload")
        assert first["model"] == "base" and "failed to load" in first["meta"]["reason"]
        assert first["results"][0]["index"] == 1
        time.sleep(1)
        assert rerank(c, "badload")["model"] == "badload@v1"
    info = reg.describe("badload")
    assert info["active"] == "v1"
    assert {v["version"]: v["status"] for v in info["versions"]}["v2"] == "failed"


def test_lru_pool_keeps_answering_as_domains_evict_each_other(service, base_version):
    domains = ["lru-a", "lru-b", "lru-c"]  # the session runs with max_num_models_per_replica=2
    for d in domains:
        service.registry.publish_dir(d, base_version, activate=True)
        service.registry.update_config(d, ab_split=1.0)
    time.sleep(1)
    with service.client() as c:
        for _ in range(3):
            for d in domains:
                body = rerank(c, d)
                assert body["model"] == f"{d}@v1", body
                assert body["results"][0]["index"] == 1


def _tar_with(member: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"x"
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_upload_safety_and_admin_token(service, version_tar):
    with service.client() as c:
        for member in ("../evil.txt", "/abs/evil.txt"):
            r = c.post("/v1/domains/safe/versions", content=_tar_with(member), headers=service.admin)
            assert r.status_code == 400, r.text
            assert "upload refused" in r.json()["error"]
        link = io.BytesIO()
        with tarfile.open(fileobj=link, mode="w:gz") as tar:
            info = tarfile.TarInfo("model.onnx")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        r = c.post("/v1/domains/safe/versions", content=link.getvalue(), headers=service.admin)
        assert r.status_code == 400 and "link" in r.json()["error"]
        assert c.post("/v1/domains/safe/versions", content=version_tar.read_bytes()).status_code == 401
        r = c.post("/v1/domains/safe/versions", content=version_tar.read_bytes(),
                   headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        assert c.post("/v1/domains/Bad!/versions", content=b"", headers=service.admin).status_code == 422
    assert not service.registry.exists("safe")  # nothing half-done
    assert not (service.registry.root / "safe").exists()  # no directory or `.staging/` left either
