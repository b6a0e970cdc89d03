"""Passage embeddings computed ahead of requests, through the pool (so they land in the node's store):
a registered upload's background job, and a promote's warm-up of the new version.

A job runs as a task of the ingress replica that accepted it, a chunk of passages per pool call (between
chunks requests are served, and a cancel is seen); its record (state/jobs.py) carries the progress. An
ingress that dies mid-job leaves the record `running`: uploading the file again resumes it cheaply,
since passages already stored are not computed again.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from state.ids import model_id
from state.jobs import JobStore
from state.passages import texts_to_warm

log = logging.getLogger(__name__)
CHUNK = 16  # passages per pool call: ~0.2-0.5 s of one replica's time at ~300 tokens


class Embedder(Protocol):
    async def embed(self, model_id: str, documents: list[str]) -> int:
        """Store the documents' embeddings with that model; how many were computed (not already stored)."""


async def run_job(jobs: JobStore, job_id: str, embedder: Embedder, model_ids: list[str], texts: list[str]) -> None:
    """Embed `texts` with each model in turn; progress, counts and the outcome in the job record."""
    total, done, computed = len(texts) * len(model_ids), 0, 0

    async def update(**fields: Any) -> dict[str, Any]:
        return await asyncio.to_thread(jobs.update, job_id, progress={"done": done, "total": total},
                                       metrics={"computed": computed, "already_stored": done - computed}, **fields)

    try:
        for model_id in model_ids:
            for start in range(0, len(texts), CHUNK):
                if (await update(status="running", stage=f"embedding with {model_id}"))["cancel_requested"]:
                    await update(status="cancelled", error="cancelled")
                    return
                chunk = texts[start:start + CHUNK]
                computed += await embedder.embed(model_id, chunk)
                done += len(chunk)
        await update(status="succeeded", stage="done")
    except Exception as e:  # noqa: BLE001 - the job fails, serving goes on
        log.exception("passage job %s failed", job_id)
        await update(status="failed", error=f"{type(e).__name__}: {e}"[:500])


def start_job(app_state: Any, domain: str, model_ids: list[str], texts: list[str], why: str) -> str:
    """Create the job record and its task (kept referenced on app_state until it ends); the job id."""
    jobs = JobStore(app_state.settings.home)
    record = jobs.create(domain, "passages", {"passages": len(texts), "models": model_ids, "why": why},
                         prefix="passages")
    tasks: set[asyncio.Task] | None = getattr(app_state, "passage_jobs", None)
    if tasks is None:
        tasks = app_state.passage_jobs = set()
    task = asyncio.get_running_loop().create_task(run_job(jobs, record["id"], app_state.service.scorer,
                                                          model_ids, texts))
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return record["id"]


async def warm(embedder: Embedder, model_id: str, texts: list[str], budget_s: float) -> dict[str, Any]:
    """Embed `texts` with a version before it takes traffic, chunk by chunk while the budget lasts (the
    chunk in flight when it runs out finishes). What was not reached is in `rest`."""
    end, done, computed = time.monotonic() + budget_s, 0, 0
    while done < len(texts) and time.monotonic() < end:
        chunk = texts[done:done + CHUNK]
        computed += await embedder.embed(model_id, chunk)
        done += len(chunk)
    return {"passages": len(texts), "embedded": done, "computed": computed, "complete": done == len(texts),
            "rest": texts[done:]}


async def warm_version(app_state: Any, domain: str, name: str, why: str = "promote") -> dict[str, Any] | None:
    """Embed the domain's most frequently shown, then registered, passages with a bi-encoder version before
    it takes traffic (a promote, or a test as the challenger), within RERANKER_PROMOTE_WARM_S; past it the
    rest go to a background job (`job_id`) and the caller goes ahead. A failure here is logged and never
    stops the caller: requests compute what is not stored. None: nothing to embed ahead."""
    settings, mid = app_state.settings, model_id(domain, name)
    if app_state.registry.manifest(domain, name).get("kind") != "bi-encoder":
        return None  # a cross-encoder's input holds the query: nothing to embed ahead
    start = time.monotonic()  # reading the impression log counts against the budget too
    try:
        texts = await asyncio.to_thread(texts_to_warm, app_state.store, settings, domain)
        out = await warm(app_state.service.scorer, mid, texts, settings.promote_warm_s - (time.monotonic() - start))
    except Exception as e:  # noqa: BLE001
        log.warning("warming %s's passages failed: %s", mid, e)
        return None
    rest = out.pop("rest")
    return {**out, "job_id": start_job(app_state, domain, [mid], rest, why) if rest else None}

