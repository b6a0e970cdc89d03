"""Training jobs over HTTP: start (admin), list, status, cancel (admin). Serving never waits on training."""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request

from serving import training_inputs
from serving.auth import require_admin
from serving.job_launcher import launch
from serving.protocol import (DomainPath, DomainQuery, JobList, JobRecord, TrainAccepted, TrainingOptions,
                              TrainRequest, errors)
from state.jobs import JobNotFound, JobStore
from state.uploads import UploadNotFound, UploadStore

router = APIRouter(tags=["training"])


def _jobs(request: Request) -> JobStore:
    return JobStore(request.app.state.settings.home)


@router.post("/v1/domains/{domain}/train/reranker", status_code=202, response_model=TrainAccepted,
             dependencies=[Depends(require_admin)], responses=errors(401, 403, 422, 503))
async def start_training(domain: DomainPath, body: TrainRequest, request: Request) -> TrainAccepted:
    if not (body.beir or body.ragas or body.labels or body.search_logs or body.expert_labels or body.uploads):
        raise HTTPException(422, "body: give at least one source (beir, ragas, labels, search_logs, "
                                 "expert_labels or uploads)")
    data = {"beir": body.beir, "beir_split": body.split, "eval_split": body.eval_split, "ragas": list(body.ragas),
            "labels": list(body.labels), "search_logs": body.search_logs, "expert_labels": body.expert_labels}
    _add_uploads(data, domain, body.uploads, UploadStore(request.app.state.settings.home))
    train = dict(body.config)
    if body.max_queries:
        train["max_queries"] = body.max_queries
    jobs = _jobs(request)
    record = jobs.create(domain, "reranker", {"data": data, "train": train, "activate": body.activate})
    try:
        handle = launch(record["id"], request.app.state.settings)
    except Exception as e:  # noqa: BLE001 - the job could not start: say so in its record too
        jobs.update(record["id"], status="failed", error=f"could not start: {e}")
        raise HTTPException(503, f"could not start the training job: {e}") from None
    jobs.update(record["id"], ray_job_id=handle)
    return TrainAccepted(job_id=record["id"], status="queued")


def _add_uploads(data: dict, domain: str, ids: list[str], uploads: UploadStore) -> None:
    """Each upload id of the domain becomes the server path of its source."""
    for i, upload_id in enumerate(ids):
        try:
            kind, path = uploads.get(domain, upload_id)["kind"], str(uploads.data_path(domain, upload_id))
        except UploadNotFound:
            raise HTTPException(422, f"uploads.{i}: unknown upload {upload_id!r} of domain {domain!r}") from None
        if kind == "beir":
            if data["beir"]:
                raise HTTPException(422, f"uploads.{i}: one BEIR source per job, and this job already has one")
            data["beir"] = path
        else:
            data[kind].append(path)


@router.get("/v1/training/options", response_model=TrainingOptions, responses=errors(503))
async def training_options(request: Request) -> TrainingOptions:
    """The options a train request's `config` takes, with their defaults (what the admin page's form shows)."""
    cached = getattr(request.app.state, "training_defaults", None)
    if cached is None:
        try:
            cached = request.app.state.training_defaults = await training_inputs.defaults(
                request.app.state.settings)
        except training_inputs.InputsUnavailable as e:
            raise HTTPException(503, str(e)) from None
    return TrainingOptions(defaults=cached)


@router.get("/v1/jobs", response_model=JobList, responses=errors(422))
async def list_jobs(request: Request, domain: DomainQuery = None) -> JobList:
    """Newest first; `?domain=` keeps one domain's jobs."""
    return JobList(jobs=[JobRecord(**r) for r in _jobs(request).list(domain)])


@router.get("/v1/jobs/{job_id}", response_model=JobRecord, responses=errors(404))
async def get_job(job_id: str, request: Request) -> JobRecord:
    try:
        return JobRecord(**_jobs(request).get(job_id))
    except JobNotFound:
        raise HTTPException(404, f"unknown job {job_id!r}") from None


@router.post("/v1/jobs/{job_id}/cancel", status_code=202, response_model=JobRecord,
             dependencies=[Depends(require_admin)], responses=errors(401, 403, 404))
async def cancel_job(job_id: str, request: Request) -> JobRecord:
    try:
        return JobRecord(**_jobs(request).request_cancel(job_id))
    except JobNotFound:
        raise HTTPException(404, f"unknown job {job_id!r}") from None
