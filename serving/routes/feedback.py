"""POST /v1/feedback (clicks on a rerank's results), GET /v1/domains/{d}/ab (the A/B report) and
GET /v1/domains/{d}/ab/timeline (impressions and clicks per arm over time).

Needs `app.state.store` (state.store.Store) and, optionally, `app.state.events`
(serving.events.EventLogger) so feedback that arrives before its impression was flushed
still finds it. Store calls are synchronous: they run in a worker thread.
"""
from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, HTTPException, Query, Request

from serving.protocol import ABReport, ABTimeline, DomainPath, FeedbackIn, FeedbackOut, errors
from state.ab_report import ab_report, ab_timeline
from state.store import InvalidClick, Store, UnknownRequest

router = APIRouter(tags=["feedback"])


def event_store(request: Request) -> Store:
    store = getattr(request.app.state, "store", None)
    if store is None:
        raise HTTPException(503, "the event store is not configured on this server")
    return store


async def _wait_for_impression(request: Request, store: Store, request_id: str) -> None:
    """The impression may still sit in a logger queue (ours, or another replica's)."""
    events = getattr(request.app.state, "events", None)
    if events is not None and events.is_pending(request_id):
        await events.flush()
        return
    if await asyncio.to_thread(store.has_impression, request_id):
        return
    # Another replica's logger writes within its max_delay_s: give it one batch interval.
    delay = getattr(events, "max_delay_s", 0.2) if events is not None else 0.0
    if delay:
        await asyncio.sleep(delay * 2 + 0.05)


@router.post("/v1/feedback", response_model=FeedbackOut, responses=errors(404, 422))
async def feedback(body: FeedbackIn, request: Request) -> FeedbackOut:
    store = event_store(request)
    await _wait_for_impression(request, store, body.request_id)
    try:
        out = await asyncio.to_thread(store.record_clicks, body.request_id, body.clicked)
    except UnknownRequest as e:
        raise HTTPException(404, f"request_id: {e}") from e
    except InvalidClick as e:
        raise HTTPException(422, str(e)) from e
    return FeedbackOut(**out)


@router.get("/v1/domains/{domain}/ab", response_model=ABReport, responses=errors(422))
async def domain_ab(domain: DomainPath, request: Request,
                    since: float | None = Query(None, description="Only impressions at/after this unix time.")
                    ) -> ABReport:
    settings = getattr(request.app.state, "settings", None)  # its spill file makes the figures incomplete
    return ABReport(**await asyncio.to_thread(ab_report, event_store(request), domain, since,
                                              settings.spill_path if settings else None))


@router.get("/v1/domains/{domain}/ab/timeline", response_model=ABTimeline, responses=errors(422))
async def domain_ab_timeline(domain: DomainPath, request: Request,
                             since: float | None = Query(None, description="Start (unix time); default: a day ago."),
                             until: float | None = Query(None, description="End (unix time); default: now."),
                             bucket_s: float = Query(3600, ge=60, description="Bucket width in seconds.")
                             ) -> ABTimeline:
    until = time.time() if until is None else until
    since = until - 86400 if since is None else since
    try:
        out = await asyncio.to_thread(ab_timeline, event_store(request), domain, since, until, bucket_s)
    except ValueError as e:
        raise HTTPException(422, f"since/until/bucket_s: {e}") from None
    return ABTimeline(**out)
