"""Training jobs over HTTP: start (admin), list, status, cancel (admin). Serving never waits on training."""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request

from serving.auth import require_admin
from serving.job_launcher import launch
from serving.protocol import DomainPath, DomainQuery, JobList, JobRecord, TrainAccepted, TrainRequest, errors
from state.jobs import JobNotFound, JobStore

router = APIRouter(tags=["training"])


def _jobs(request: Request) -> JobStore:
    return JobStore(request.app.state.settings.home)


@router.post("/v1/domains/{domain}/train/reranker", status_code=202, response_model=TrainAccepted,
             dependencies=[Depends(require_admin)], responses=errors(401, 403, 422, 503))
async def start_training(domain: DomainPath, body: TrainRequest, request: Request) -> TrainAccepted:
    if not (body.beir or body.ragas or body.labels or body.search_logs):
        raise HTTPException(422, "body: give at least one source (beir, ragas, labels or search_logs)")
    train = dict(body.config)
    if body.max_queries:
        train["max_queries"] = body.max_queries
    jobs = _jobs(request)
    record = jobs.create(domain, "reranker", {
        "data": {"beir": body.beir, "beir_split": body.split, "eval_split": body.eval_split,
                 "ragas": body.ragas, "labels": body.labels, "search_logs": body.search_logs},
        "train": train, "activate": body.activate})
    try:
        handle = launch(record["id"], request.app.state.settings)
    except Exception as e:  # noqa: BLE001 - the job could not start: say so in its record too
        jobs.update(record["id"], status="failed", error=f"could not start: {e}")
        raise HTTPException(503, f"could not start the training job: {e}") from None
    jobs.update(record["id"], ray_job_id=handle)
    return TrainAccepted(job_id=record["id"], status="queued")


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
