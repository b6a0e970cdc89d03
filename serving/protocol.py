"""Wire models: every request and response body of the HTTP API, in one place."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from state.ids import DOMAIN_RE

_DOMAIN_DOC = f"Domain id: {DOMAIN_RE.pattern}"
DomainPath = Annotated[str, Path(pattern=DOMAIN_RE.pattern, description=_DOMAIN_DOC)]
DomainQuery = Annotated[str | None, Query(pattern=DOMAIN_RE.pattern, description=_DOMAIN_DOC)]


# ---- rerank --------------------------------------------------------------------------------------
class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # callers may attach metadata; it is echoed back
    id: str | None = None
    text: str


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # e.g. Cohere's "model"
    query: str = Field(description="The search query; must not be empty.")
    documents: list[str | DocumentIn] = Field(description="Passages to rerank: strings or {id?, text}.")
    top_n: int | None = Field(None, ge=1, description="Return only the best N results.")
    max_tokens_per_doc: int | None = Field(
        None, ge=1, description="Score each document over windows of the model's length up to this many of its "
                                "tokens (default: the server's RERANKER_DOC_TOKENS, 4096; at most "
                                "RERANKER_MAX_DOC_TOKENS). The document's score is its best window's.")
    return_documents: bool = False
    domain: str | None = Field(None, pattern=DOMAIN_RE.pattern, description="Used when ?domain= is absent.")
    user_id: str | None = Field(None, description="Sticky A/B key; else X-User-Id / X-Session-Id headers.")

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("query must not be empty")
        return v

    @field_validator("documents")
    @classmethod
    def _documents_not_empty(cls, v: list) -> list:
        if not v:
            raise ValueError("documents must not be empty")
        return v


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, Any] | None = None


class RerankResponse(BaseModel):
    id: str
    results: list[RerankResult]
    model: str
    domain: str
    variant: Literal["domain", "base"]
    meta: dict[str, Any] = {}


# ---- feedback and the A/B report -----------------------------------------------------------------
class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=64, description="The `id` of a rerank response.")
    # Strict: 3 is a document index, "3" is a document id; no silent coercion between them.
    clicked: list[StrictInt | StrictStr] = Field(min_length=1, max_length=1000,
                                                 description="Clicked documents: indices in the request's "
                                                             "documents list, or document ids.")


class FeedbackOut(BaseModel):
    request_id: str
    clicked: list[int] = Field(description="Every index clicked for this request so far (repeats are no-ops).")


class ArmSummary(BaseModel):
    impressions: int
    clicks: int
    ctr: float | None
    mrr: float | None
    latency_ms_mean: float | None
    latency_ms_p95: float | None
    models: dict[str, int]


class ABComparison(BaseModel):
    ctr_diff: float | None
    ci95: list[float] | None
    p_value: float | None
    z: float | None


class ABReport(BaseModel):
    domain: str
    since: float | None
    arms: dict[str, ArmSummary]
    comparison: ABComparison
    verdict: Literal["insufficient data", "no difference", "domain better", "base better"]
    thresholds: dict[str, float]


# ---- domains and versions (admin) ----------------------------------------------------------------
class VersionInfo(BaseModel):
    version: str
    status: Literal["candidate", "active", "retired", "failed"]
    updated: float | None = None
    error: str | None = None
    manifest: dict[str, Any] = Field(default_factory=dict, description="manifest.json of the version.")


class DomainInfo(BaseModel):
    domain: str
    active: str | None
    ab_split: float | None
    versions: list[VersionInfo]


class DomainList(BaseModel):
    domains: list[DomainInfo]


class DomainConfigUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown key is an error, not silently ignored
    ab_split: float | None = Field(None, ge=0.0, le=1.0, description="Share of traffic for the domain model.")


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(description="N or vN.")


class Published(BaseModel):
    domain: str
    version: str
    model_id: str
    status: Literal["candidate", "active"]


class ActiveVersion(BaseModel):
    domain: str
    active: str
    model_id: str


class Deleted(BaseModel):
    domain: str
    deleted: str


# ---- training jobs -------------------------------------------------------------------------------
class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    beir: str | None = Field(None, description="BEIR directory on the server (corpus.jsonl, queries.jsonl, qrels/)")
    split: str = "train"
    eval_split: str | None = None
    ragas: list[str] = Field(default_factory=list, description="RAGAS JSONL files on the server")
    labels: list[str] = Field(default_factory=list, description="expert label files (JSONL/CSV) on the server")
    search_logs: bool = False
    max_queries: int | None = Field(None, ge=1)
    activate: bool = False
    config: dict[str, Any] = Field(default_factory=dict, description="training options (training.config)")


class TrainAccepted(BaseModel):
    job_id: str
    status: str


class Progress(BaseModel):
    done: int
    total: int


class JobRecord(BaseModel):
    """A training job as the API shows it (server paths, pids and Ray handles stay in the logs)."""
    id: str
    domain: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    stage: str
    progress: Progress
    metrics: dict[str, Any]
    gates: list[dict[str, Any]]
    sources: dict[str, Any]
    version: str | None
    error: str | None
    cancel_requested: bool
    created: float
    updated: float
    finished: float | None


class JobList(BaseModel):
    jobs: list[JobRecord]


# ---- errors --------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer: `error` says what is wrong ("<field>: <problem>"), `detail` lists fields."""
    error: str
    detail: list[ErrorDetail] | None = None


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the error codes it can answer, all in the ErrorBody shape."""
    return {code: {"model": ErrorBody} for code in codes}
