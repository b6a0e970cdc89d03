"""Wire models: every request and response body of the HTTP API, in one place."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Header, Path, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from serving import redact
from state.db import DOC_ID_LEN, USER_KEY_LEN
from state.ids import DOMAIN_RE, VERSION_RE

_DOMAIN_DOC = f"Domain id: {DOMAIN_RE.pattern}"
DomainPath = Annotated[str, Path(pattern=DOMAIN_RE.pattern, description=_DOMAIN_DOC)]
DomainQuery = Annotated[str | None, Query(pattern=DOMAIN_RE.pattern, description=_DOMAIN_DOC)]
VersionPath = Annotated[str, Path(pattern=VERSION_RE.pattern, description="N or vN")]
UserKeyHeader = Annotated[str | None, Header(max_length=USER_KEY_LEN)]  # X-User-Id / X-Session-Id


def _json_integer(v: Any) -> Any:
    """Strict types: "1" and true are not integers. 2.0 is (as JSON Schema says); 2.5 is refused."""
    if isinstance(v, (str, bool)):
        raise ValueError("Input should be a valid integer, not a string or boolean")
    return v


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
# the bound before the validator, or the spec would show pydantic's "ge" instead of "minimum"
PositiveJsonInt = Annotated[int, Field(ge=1), BeforeValidator(_json_integer)]
UtcHour = Annotated[int, Field(ge=0, le=23), BeforeValidator(_json_integer)]


# ---- rerank ---------------------------------------------------------------------------------------
class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # callers may attach metadata; it is echoed back
    id: str | None = Field(None, max_length=DOC_ID_LEN)
    text: str | None = Field(None, description="What is ranked; may be absent when rank_fields names other fields.")


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    return v


def _not_empty(v: list) -> list:
    if not v:
        raise ValueError("must not be empty")
    return v


class RerankRequest(BaseModel):
    """Cohere's rerank body (v1 and v2) plus our extensions (domain, user_id; return_documents and
    rank_fields on v2). Every other key is refused (422 naming it): nothing is accepted and ignored.
    Types are strict: "1" and true are not integers (2.0 is, as JSON Schema says)."""
    model_config = ConfigDict(extra="forbid")
    # The spec says what the validators below enforce (their messages are clearer than a pattern's).
    query: str = Field(description="The search query; must not be empty.", json_schema_extra={"pattern": r"\S"})
    documents: list[str | DocumentIn] = Field(description="Passages to rerank: strings or {id?, text?, ...}.",
                                              json_schema_extra={"minItems": 1})
    top_n: PositiveJsonInt | None = Field(None, description="Return only the best N results.")
    max_tokens_per_doc: PositiveJsonInt | None = Field(
        None, description="Score each document over windows of the model's length up to this many of its "
                          "tokens (default: the server's RERANKER_DOC_TOKENS, 4096; at most "
                          "RERANKER_MAX_DOC_TOKENS). The document's score is its best window's.")
    return_documents: StrictBool = False
    model: str | None = Field(None, description="A domain id or 'domain:<id>' selects that domain; a Cohere model id "
                                                "(rerank-...) selects nothing (domain / ?domain= / default decide); "
                                                "'base:multilingual' has the multilingual base answer.")
    domain: str | None = Field(None, pattern=DOMAIN_RE.pattern, description="Used when ?domain= is absent.")
    user_id: str | None = Field(None, max_length=USER_KEY_LEN,
                                description="Sticky A/B key; else X-User-Id / X-Session-Id headers.")
    rank_fields: list[Annotated[str, Field(json_schema_extra={"minLength": 1, "pattern": r"\S"})]] | None = Field(
        None, min_length=1, max_length=32, json_schema_extra={"uniqueItems": True},
        description="Rank object documents on these fields (Cohere v1), in this order, as 'field: value' lines; "
                    "documents need no text then. Names are non-empty and distinct.")
    # Cohere options this service does not implement: accepted only when unset, refused otherwise.
    max_chunks_per_doc: JsonInt | None = Field(None, description="Cohere v1 (deprecated): refused when set.")
    priority: JsonInt | None = Field(None, description="Cohere v2: only 0 (the default) is accepted; requests are "
                                                       "served in arrival order.")

    _query_not_blank = field_validator("query")(_not_blank)
    _documents_not_empty = field_validator("documents")(_not_empty)

    @field_validator("rank_fields")
    @classmethod
    def _fields_named(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (any(not f.strip() for f in v) or len(set(v)) != len(v)):
            raise ValueError("field names must be non-empty and distinct")
        return v

    @field_validator("max_chunks_per_doc")
    @classmethod
    def _no_chunks(cls, v: int | None) -> int | None:
        if v is not None:
            raise ValueError("not supported: long documents are scored over windows up to max_tokens_per_doc")
        return v

    @field_validator("priority")
    @classmethod
    def _default_priority(cls, v: int | None) -> int | None:
        if v not in (None, 0):
            raise ValueError("not supported: only 0, the default; requests are served in arrival order")
        return v


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, Any] | None = None


class ApiVersion(BaseModel):
    version: Literal["1", "2"]
    is_experimental: bool = False


class BilledUnits(BaseModel):
    search_units: int = Field(description="As Cohere counts: one per query and up to 100 documents.")


class RerankMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    documents: int
    windows: int = Field(description="Model inputs scored: one per window of every document.")
    truncated_documents: int = Field(description="Documents cut at max_tokens_per_doc (TEI: at the model's length).")
    latency_ms: float
    reason: str | None = Field(None, description="Why the base answered a domain that has a model.")
    language: str | None = Field(None, description="Base routing: the language detected over the request, which "
                                 "chose the base that answered (`model`: 'base' or 'base:multilingual').")
    fused: bool | None = Field(None, description="True: each relevance_score is the sigmoid of a weighted sum "
                               "of the neural and the BM25 score, each z-normalised over this request's "
                               "documents (comparable within this response only).")
    api_version: ApiVersion
    billed_units: BilledUnits


class RerankResponse(BaseModel):
    id: str
    results: list[RerankResult]
    model: str
    domain: str
    variant: Literal["domain", "challenger", "base"] = Field(
        description="The A/B arm: the domain's champion (active version), its challenger, or the base.")
    meta: RerankMeta


# ---- Cohere's list-models shape: the domains as models ----------------------------------------------
class ModelCard(BaseModel):
    """One domain as Cohere's GetModelResponse (name is what `model` takes), plus what the service knows."""
    name: str
    endpoints: list[str] = ["rerank"]
    default_endpoints: list[str] = Field(default_factory=list, description="['rerank'] for the default domain.")
    finetuned: bool = Field(description="The domain has an active fine-tuned version.")
    is_deprecated: bool = False
    context_length: int = Field(description="Tokens the model reads per (query, document) pair.")
    features: list[str] = Field(default_factory=list)
    domain: str
    active_version: str | None = Field(None, description="e.g. legal@v3; the A/B split decides who answers.")
    ab_split: float | None = None


class ModelList(BaseModel):
    models: list[ModelCard]
    next_page_token: str | None = None


# ---- Hugging Face text-embeddings-inference (TEI) rerank ----------------------------------------------
class TeiRerankRequest(BaseModel):
    """TEI's POST /rerank body. Unknown keys are refused."""
    model_config = ConfigDict(extra="forbid")
    query: str = Field(description="Must not be empty.", json_schema_extra={"pattern": r"\S"})
    texts: list[str] = Field(description="At least one.", json_schema_extra={"minItems": 1})
    # strict, as /rerank: "yes", "off", 0 and 1 are no booleans (a 422 naming the field)
    raw_scores: StrictBool = Field(False, description="Scores before the model's activation (see README).")
    return_text: StrictBool = False
    truncate: StrictBool | None = Field(None, description="Cut texts to the model's length; false or absent (TEI's "
                                                           "default): a text that does not fit is a 413.")
    truncation_direction: Literal["Right", "right"] | None = Field(
        None, description="Only Right (TEI's default): texts are cut at the end.")

    _query_not_blank = field_validator("query")(_not_blank)
    _texts_not_empty = field_validator("texts")(_not_empty)


class TeiRank(BaseModel):
    index: int
    score: float
    text: str | None = None


class TeiInfo(BaseModel):
    """TEI's GET /info, which TEI clients read before they rerank (model_type must be a reranker)."""
    model_config = ConfigDict(protected_namespaces=())
    model_id: str
    model_sha: str | None
    model_dtype: str = "int8"
    model_type: dict[str, dict[str, Any]]
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None = None
    max_client_batch_size: int
    auto_truncate: bool = False
    tokenization_workers: int = 1
    version: str
    sha: str | None = None
    docker_label: str | None = None


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    bases: list[str] = Field(default_factory=list, description="The bases that must answer a scoring call for "
                             "the service to be ready: `base`, and `base:multilingual` with base routing on.")
    error: str | None = None
    events_backlog: int = Field(0, description="Impression events spilled during a database outage, not yet "
                                "replayed into the store (the replay runs by itself; serving is unaffected).")


# ---- feedback and the A/B report -----------------------------------------------------------------
class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=64, description="The `id` of a rerank response.")
    # Strict: 3 is a document index, "3" is a document id; no silent coercion between them.
    clicked: list[JsonInt | StrictStr] = Field(min_length=1, max_length=1000,
                                                 description="Clicked documents: indices in the request's "
                                                             "documents list, or document ids.")


class FeedbackOut(BaseModel):
    request_id: str
    clicked: list[int] = Field(description="Every index clicked for this request so far (repeats are no-ops).")


class ArmSummary(BaseModel):
    impressions: int
    clicks: int
    ctr: float | None
    ctr_ci95: list[float] | None = Field(None, description="95% Wilson interval of the CTR.")
    mrr: float | None
    mrr_ci95: list[float] | None = Field(None, description="95% normal interval of the MRR (n >= 2).")
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
    incomplete: bool = Field(False, description="Impressions of this domain wait in the spill file (a database "
                             "outage) and are not in these figures yet; they are replayed automatically.")
    events_backlog: int = Field(0, description="How many (0 when complete).")


# ---- domains and versions (admin) ----------------------------------------------------------------
class VersionInfo(BaseModel):
    version: str
    status: Literal["candidate", "active", "challenger", "retired", "failed"]
    updated: float | None = None
    error: str | None = None
    manifest: dict[str, Any] = Field(default_factory=dict, description="manifest.json of the version "
                                     "(server paths shortened to their last component).")

    _no_paths = field_validator("error", "manifest")(lambda v: redact.value(v))


class DomainInfo(BaseModel):
    domain: str
    active: str | None
    ab_split: float | None
    versions: list[VersionInfo]
    challenger: str | None = Field(None, description="The version under test against the active one.")
    challenger_since: float | None = None
    base_share: float | None = Field(None, description="With a challenger: the base holdout's share (null: "
                                                       "RERANKER_AB_BASE_SHARE).")
    challenger_share: float | None = Field(None, description="With a challenger: its share of the non-base "
                                                             "traffic (null: RERANKER_AB_CHALLENGER_SHARE).")


class DomainList(BaseModel):
    domains: list[DomainInfo]


class DomainConfigUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown key is an error, not silently ignored
    ab_split: float | None = Field(None, ge=0.0, le=1.0, strict=True,
                                   description="Share of traffic for the domain model (no challenger).")
    base_share: float | None = Field(None, ge=0.0, le=1.0, strict=True,
                                     description="With a challenger: the base holdout's share (0: none).")
    challenger_share: float | None = Field(None, ge=0.0, le=1.0, strict=True,
                                           description="With a challenger: its share of the non-base traffic.")


class DomainCreate(DomainConfigUpdate):
    """POST /v1/domains: a domain exists only once created (or once a version is published to it)."""
    domain: str = Field(pattern=DOMAIN_RE.pattern, description=_DOMAIN_DOC)


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(pattern=VERSION_RE.pattern, description="N or vN.")
    expected_active: str | None = Field(
        None, pattern=VERSION_RE.pattern,
        description="The version this promote replaces (null: none is active). If another version is active "
                    "when the registry flips, the answer is 409 naming it and nothing changes. Absent: the "
                    "version active when the request arrived.")


class Published(BaseModel):
    domain: str
    version: str
    model_id: str
    status: Literal["candidate", "active"]


class WarmReport(BaseModel):
    """A promote's warm-up: passages embedded with the new version before it took traffic."""
    passages: int = Field(description="registered and most frequently shown passages of the domain")
    embedded: int = Field(description="embedded (or found stored) within RERANKER_PROMOTE_WARM_S")
    computed: int = Field(description="of those, computed now (the rest were stored already)")
    complete: bool
    job_id: str | None = Field(None, description="past the budget: the job embedding the rest")


class ActiveVersion(BaseModel):
    domain: str
    active: str
    model_id: str
    warm: WarmReport | None = None


class PassagesAccepted(BaseModel):
    domain: str
    job_id: str = Field(description="the background embedding job: GET /v1/jobs/{job_id}")
    passages: int
    added: int = Field(description="texts registered now")
    already_registered: int
    models: list[str] = Field(description="model ids the passages are embedded with")


class PassagesInfo(BaseModel):
    domain: str
    passages: int = Field(description="texts registered for the domain")


class Deleted(BaseModel):
    domain: str
    deleted: str


# ---- champion vs challenger, decisions, autopilot -------------------------------------------------
class Actor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: str = Field("admin", min_length=1, max_length=100, pattern=r"\S", description="who acts (the timeline says)")


class ChallengerSet(Actor):
    version: str = Field(pattern=VERSION_RE.pattern, description="N or vN: a published version to test.")


class DecisionRecord(BaseModel):
    id: int
    ts: float
    domain: str
    champion: str
    challenger: str
    outcome: Literal["promote", "reject", "inconclusive"]
    actor: str = Field(description="'autopilot' (serving's timer) or who asked")
    stats: dict[str, Any]
    reasons: list[str]


class ChallengeStatus(BaseModel):
    """A test's statistics and what the decision rule says now (`continue`: no decision yet)."""
    domain: str
    champion: str
    challenger: str
    since: float
    outcome: Literal["promote", "reject", "inconclusive", "continue"]
    reasons: list[str]
    stats: dict[str, Any]
    decision: DecisionRecord | None = Field(None, description="the stored decision, when this call took one")


class DecisionList(BaseModel):
    domain: str
    current: ChallengeStatus | None = Field(description="the running test, if any")
    decisions: list[DecisionRecord] = Field(description="newest first")


class TimelineEntry(BaseModel):
    ts: float
    kind: str = Field(description="training, trained, gated, failed, cancelled, challenged, withdrawn, promoted, "
                                  "decided")
    actor: str
    model: str | None
    summary: str


class DomainTimeline(BaseModel):
    domain: str
    events: list[TimelineEntry] = Field(description="newest first")


class AutopilotDomain(BaseModel):
    enabled: bool
    min_clicked_queries: int
    min_expert_labels: int
    window_start_hour: int | None
    window_end_hour: int | None
    adopted_job: str | None = Field(None, description="the last automatic job whose version was taken in")


class AutopilotUpdate(BaseModel):
    """Only the keys sent change; a window hour sent as null clears the window."""
    model_config = ConfigDict(extra="forbid")
    enabled: StrictBool = False
    min_clicked_queries: PositiveJsonInt = 200
    min_expert_labels: PositiveJsonInt = 50
    window_start_hour: UtcHour | None = Field(None, description="UTC hour the window opens")
    window_end_hour: UtcHour | None = Field(None, description="UTC hour it closes (may wrap midnight)")


class AutopilotStatus(BaseModel):
    killed: bool = Field(description="the kill switch: no automatic action at all while on")
    spill_backlog: bool = Field(description="impressions are spilling: automatic actions wait")
    interval_s: float
    max_jobs: int
    domains: dict[str, AutopilotDomain]


class KillSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    killed: StrictBool


class AutopilotAction(BaseModel):
    domain: str | None
    action: str
    reason: str


class AutopilotRound(BaseModel):
    actions: list[AutopilotAction]


# ---- training jobs -------------------------------------------------------------------------------
SPLIT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # a BEIR qrels/<split>.tsv name, never a path


class TrainRequest(BaseModel):
    """Server paths must be absolute and inside RERANKER_DATA_ROOTS (default: the service's uploads)."""
    model_config = ConfigDict(extra="forbid")
    beir: str | None = Field(None, max_length=4096,
                             description="BEIR directory on the server (corpus.jsonl, queries.jsonl, qrels/)")
    split: str = Field("train", pattern=SPLIT_PATTERN)
    eval_split: str | None = Field(None, pattern=SPLIT_PATTERN)
    ragas: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=100, description="RAGAS JSONL files on the server")
    labels: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=100, description="expert label files (JSONL/CSV) on the server")
    search_logs: StrictBool = False
    expert_labels: StrictBool = Field(False, description="the domain's grades from the label queue (/labels)")
    uploads: list[str] = Field(default_factory=list,
                               description="ids of this domain's uploads (POST /v1/domains/{d}/uploads)")
    max_queries: PositiveJsonInt | None = None
    activate: StrictBool = False
    config: dict[str, Any] = Field(default_factory=dict, description="training options: GET /v1/training/options "
                                   "gives each one's default and the schema (types, ranges) they are checked by")


class TrainAccepted(BaseModel):
    job_id: str
    status: str


class Progress(BaseModel):
    done: int
    total: int


class LossPoint(BaseModel):
    step: int
    loss: float


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
    loss: list[LossPoint] = Field(default_factory=list, description="training loss as the trainer logged it")
    export: dict[str, Any] | None = Field(default=None, description="the export ladder: the format that won "
                                          "(`precision`) and what each rung tried cost (ms/pair, size, parity)")

    _no_paths = field_validator("sources", "metrics", "gates", "error")(lambda v: redact.value(v))


class JobList(BaseModel):
    jobs: list[JobRecord]


class TrainingOptions(BaseModel):
    defaults: dict[str, Any] = Field(description="every training option (`config` of a train request) "
                                                 "with its default")
    json_schema: dict[str, Any] = Field(description="the options schema (JSON Schema: types and ranges) that a "
                                                    "train request's `config` is checked against")


# ---- traffic and the A/B timeline ----------------------------------------------------------------
class DomainTraffic(BaseModel):
    domain: str
    last_hour: int
    last_day: int
    total: int


class TrafficReport(BaseModel):
    now: float
    domains: list[DomainTraffic] = Field(description="every domain with logged impressions")


class ArmCount(BaseModel):
    impressions: int
    clicks: int = Field(description="impressions with at least one click")


class TimelineBucket(BaseModel):
    start: float
    base: ArmCount
    domain: ArmCount
    challenger: ArmCount | None = None


class ABTimeline(BaseModel):
    domain: str
    since: float
    until: float
    bucket_s: float
    buckets: list[TimelineBucket]


# ---- training data uploads -----------------------------------------------------------------------
UploadKind = Literal["ragas", "labels", "beir"]


class UploadInfo(BaseModel):
    id: str
    domain: str
    kind: UploadKind
    filename: str
    size: int
    created: float
    stats: dict[str, Any] = Field(description="what the training source read from it")


class UploadList(BaseModel):
    uploads: list[UploadInfo]


# ---- expert labels -------------------------------------------------------------------------------
class QueuePassage(BaseModel):
    passage_id: str = Field(description="sha256 of the passage text")
    doc_id: str | None
    text: str
    score: float = Field(description="its score in the newest impression that showed it")
    position: int = Field(description="the best rank it was shown at (0 = top)")
    labels: dict[str, int] = Field(description="grades so far, by labeller")


class QueueItem(BaseModel):
    query: str
    query_id: str
    impressions: int
    last_seen: float
    margin: float | None = Field(description="mean score gap between the top two shown passages")
    passages: list[QueuePassage]


class LabelQueue(BaseModel):
    domain: str
    order: Literal["frequent", "uncertain"]
    items: list[QueueItem]


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    passage_id: str = Field(min_length=64, max_length=64)
    relevance: StrictInt = Field(ge=1, le=5, description="1 = not relevant ... 5 = perfectly relevant")


class LabelsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, description="the logged query, as the queue gave it")
    labels: list[LabelIn] = Field(min_length=1, max_length=200)
    labeller: str = Field(min_length=1, max_length=100, pattern=r"\S",
                          description="who graded (the name entered on the admin page's login form)")


class LabelsStored(BaseModel):
    domain: str
    stored: int
    labeller: str


class LabelSummary(BaseModel):
    domain: str
    labels: int = Field(description="grades stored (one per labeller and pair)")
    queries: int
    pairs: int = Field(description="distinct (query, passage) pairs graded")
    relevance: dict[str, int]
    labellers: dict[str, int]
    last: float | None


class AdminCheck(BaseModel):
    admin: bool


# ---- errors --------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer, in one shape: `message` (Cohere's key) and `error` say what is wrong, naming
    the field ("<field>: <problem>"); `detail` lists the fields."""
    message: str
    error: str
    detail: list[ErrorDetail]


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the error codes it can answer, all in the ErrorBody shape."""
    return {code: {"model": ErrorBody} for code in codes}
