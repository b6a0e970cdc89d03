"""Training jobs over HTTP: start (admin), status, cancel (admin). Serving never waits on training."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from serving.auth import require_admin
from serving.job_launcher import launch
from state.ids import InvalidId, validate_domain
from state.jobs import JobNotFound, JobStore

router = APIRouter(tags=["training"])


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


def _store(request: Request) -> JobStore:
    return JobStore(request.app.state.settings.home)


@router.post("/v1/domains/{domain}/train/reranker", status_code=202, dependencies=[Depends(require_admin)])
async def start_training(domain: str, body: TrainRequest, request: Request) -> dict:
    try:
        validate_domain(domain)
    except InvalidId as e:
        raise HTTPException(422, str(e)) from None
    if not (body.beir or body.ragas or body.labels or body.search_logs):
        raise HTTPException(422, "body: give at least one source (beir, ragas, labels or search_logs)")
    train = dict(body.config)
    if body.max_queries:
        train["max_queries"] = body.max_queries
    store = _store(request)
    record = store.create(domain, "reranker", {
        "data": {"beir": body.beir, "beir_split": body.split, "eval_split": body.eval_split,
                 "ragas": body.ragas, "labels": body.labels, "search_logs": body.search_logs},
        "train": train, "activate": body.activate})
    try:
        handle = launch(record["id"], request.app.state.settings.home)
    except Exception as e:  # noqa: BLE001 - the job could not start: say so in its record too
        store.update(record["id"], status="failed", error=f"could not start: {e}")
        raise HTTPException(503, f"could not start the training job: {e}") from None
    store.update(record["id"], ray_job_id=handle)
    return {"job_id": record["id"], "status": "queued"}


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, request: Request) -> dict:
    try:
        return _store(request).get(job_id)
    except JobNotFound:
        raise HTTPException(404, f"unknown job {job_id!r}") from None


@router.post("/v1/jobs/{job_id}/cancel", status_code=202, dependencies=[Depends(require_admin)])
async def cancel_job(job_id: str, request: Request) -> dict:
    try:
        return _store(request).request_cancel(job_id)
    except JobNotFound:
        raise HTTPException(404, f"unknown job {job_id!r}") from None
