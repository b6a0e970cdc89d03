"""The versioned registry: atomic, monotonic publishing; promote/rollback; failure handling."""
from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from state.ids import InvalidId, parse_version, split_model_id, validate_domain
from state.registry import NotFound, Registry, RegistryError


def fake_version(reg: Registry, domain: str, payload: bytes = b"onnx") -> Path:
    staged = reg.stage(domain)
    (staged / "model.onnx").write_bytes(payload)
    (staged / "tokenizer.json").write_text("{}")
    return staged


def publish(reg: Registry, domain: str, payload: bytes = b"onnx", **kw) -> str:
    return reg.publish(domain, fake_version(reg, domain, payload), {"kind": "cross-encoder"}, **kw)


def test_ids_are_validated():
    for bad in ["", "Legal", "../x", "a/b", "-x", "x" * 65, "a b", "_base"]:
        with pytest.raises(InvalidId):
            validate_domain(bad)
    assert validate_domain("legal-de_2") == "legal-de_2"
    assert parse_version("2") == parse_version("v2") == 2
    for bad in ["0", "v0", "x2", "2.1", "-1"]:
        with pytest.raises(InvalidId):
            parse_version(bad)
    assert split_model_id("legal@v7") == ("legal", "v7")
    with pytest.raises(InvalidId):
        split_model_id("../x@v1")


def test_publish_is_monotonic_and_manifest_describes_files(tmp_path):
    reg = Registry(tmp_path)
    assert [publish(reg, "legal") for _ in range(3)] == ["v1", "v2", "v3"]
    man = reg.manifest("legal", "v2")
    assert man["domain"] == "legal" and man["version"] == "v2" and man["model_id"] == "legal@v2"
    assert set(man["files"]) == {"model.onnx", "tokenizer.json"}
    assert not (tmp_path / "legal" / ".staging").exists()  # no empty leftovers
    reg.delete_version("legal", "v3")
    assert publish(reg, "legal") == "v4"  # numbers are never reused
    statuses = {v["version"]: v["status"] for v in reg.describe("legal")["versions"]}
    assert statuses == {"v1": "candidate", "v2": "candidate", "v4": "candidate"}


def _publish_many(root: str, n: int, out) -> None:
    reg = Registry(root)
    out.put([publish(reg, "race") for _ in range(n)])


def test_concurrent_publishers_never_collide(tmp_path):
    q = mp.get_context("fork").Queue()
    procs = [mp.get_context("fork").Process(target=_publish_many, args=(str(tmp_path), 5, q)) for _ in range(3)]
    for p in procs:
        p.start()
    names = [n for _ in procs for n in q.get(timeout=60)]
    for p in procs:
        p.join()
    assert sorted(names, key=parse_version) == [f"v{i}" for i in range(1, 16)]
    assert sorted(p.name for p in (tmp_path / "race").iterdir() if p.name.startswith("v")) == sorted(names)


def test_promote_rollback_and_statuses(tmp_path):
    reg = Registry(tmp_path)
    publish(reg, "med", activate=True)
    publish(reg, "med")
    assert reg.active_version("med") == "v1"
    reg.promote("med", "2")
    d = {v["version"]: v["status"] for v in reg.describe("med")["versions"]}
    assert reg.active_version("med") == "v2" and d == {"v1": "retired", "v2": "active"}
    assert reg.rollback("med") == "v1"
    assert reg.active_version("med") == "v1"
    with pytest.raises(RegistryError):
        reg.rollback("med")
    with pytest.raises(NotFound):
        reg.promote("med", "v9")
    with pytest.raises(RegistryError):
        reg.delete_version("med", "v1")  # active


def test_corrupt_version_is_refused_and_marked_failed(tmp_path):
    reg = Registry(tmp_path)
    publish(reg, "sci", activate=True)
    publish(reg, "sci", payload=b"good")
    (reg.version_dir("sci", 2) / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(RegistryError, match="sha256"):
        reg.promote("sci", 2)
    assert reg.active_version("sci") == "v1"
    assert {v["version"]: v["status"] for v in reg.describe("sci")["versions"]}["v2"] == "failed"


def test_failed_active_version_hands_back_to_previous(tmp_path):
    reg = Registry(tmp_path)
    publish(reg, "tech", activate=True)
    publish(reg, "tech", activate=True)
    reg.mark_failed("tech", "v2", "load failed: boom")
    assert reg.active_version("tech") == "v1"
    info = {v["version"]: v for v in reg.describe("tech")["versions"]}
    assert info["v2"]["status"] == "failed" and "boom" in info["v2"]["error"]
    cfg = json.loads((tmp_path / "tech" / "domain.json").read_text())
    assert cfg["active"] == "v1"


def test_config_validation(tmp_path):
    reg = Registry(tmp_path)
    publish(reg, "legal")
    assert reg.update_config("legal", ab_split=0.25)["ab_split"] == 0.25
    with pytest.raises(RegistryError):
        reg.update_config("legal", ab_split=1.5)
    assert reg.config("legal")["ab_split"] == 0.25  # nothing half-done
