"""Training jobs over HTTP: start (admin), list, status, cancel (admin). Serving never waits on training."""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request

from serving import train_request, training_inputs
from serving.auth import require_admin
from serving.job_launcher import launch
from serving.protocol import (DomainPath, DomainQuery, JobList, JobRecord, TrainAccepted, TrainingOptions,
                              TrainRequest, errors)
from state.jobs import JobNotFound, JobStore

router = APIRouter(tags=["training"])


def _jobs(request: Request) -> JobStore:
    return JobStore(request.app.state.settings.home)


@router.post("/v1/domains/{domain}/train/reranker", status_code=202, response_model=TrainAccepted,
             dependencies=[Depends(require_admin)], responses=errors(401, 403, 422, 503))
async def start_training(domain: DomainPath, body: TrainRequest, request: Request) -> TrainAccepted:
    """The whole request is checked first (serving/train_request.py: options by the options schema,
    server paths inside RERANKER_DATA_ROOTS, split names): a 422 names each bad field and creates no job."""
    settings = request.app.state.settings
    config = train_request.check(body, domain, settings, (await _options(request))["schema"])
    jobs = _jobs(request)
    record = jobs.create(domain, "reranker", config)
    try:
        handle = launch(record["id"], settings)
    except Exception as e:  # noqa: BLE001 - the job could not start: say so in its record too
        jobs.update(record["id"], status="failed", error=f"could not start: {e}")
        raise HTTPException(503, f"could not start the training job: {e}") from None
    jobs.update(record["id"], ray_job_id=handle)
    return TrainAccepted(job_id=record["id"], status="queued")


async def _options(request: Request) -> dict:
    """Training's options (defaults and schema), asked once per replica (a child process: 503 if it fails)."""
    cached = getattr(request.app.state, "training_options", None)
    if cached is None:
        try:
            cached = request.app.state.training_options = await training_inputs.options(request.app.state.settings)
        except training_inputs.InputsUnavailable as e:
            raise HTTPException(503, str(e)) from None
    return cached


@router.get("/v1/training/options", response_model=TrainingOptions, responses=errors(503))
async def training_options(request: Request) -> TrainingOptions:
    """The options a train request's `config` takes: their defaults (what the admin page's form shows) and
    the schema (types and ranges) every train request is checked against."""
    options = await _options(request)
    return TrainingOptions(defaults=options["defaults"], json_schema=options["schema"])


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
