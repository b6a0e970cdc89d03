"""GET /v1/traffic: impressions per domain in the last hour, the last day and in all (open, like /ab)."""
from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request

from serving.protocol import DomainTraffic, TrafficReport
from serving.routes.feedback import event_store

router = APIRouter(tags=["feedback"])


@router.get("/v1/traffic", response_model=TrafficReport)
async def traffic(request: Request) -> TrafficReport:
    now = time.time()
    counts = await asyncio.to_thread(event_store(request).traffic, now)
    return TrafficReport(now=now, domains=[DomainTraffic(domain=d, **c) for d, c in counts.items()])
