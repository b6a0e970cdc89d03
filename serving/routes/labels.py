"""Expert labels over HTTP: the queue of logged queries to grade and the grades (admin: queries and
passages are the domain's data), the counts (open), and the export in the labels source format."""
from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from serving.auth import require_admin
from serving.protocol import DomainPath, LabelQueue, LabelsIn, LabelsStored, LabelSummary, QueueItem, errors
from serving.routes.feedback import event_store
from state.labels import InvalidLabel, LabelStore

router = APIRouter(prefix="/v1/domains", tags=["labels"])
EXPORT_FIELDS = ("query", "document", "relevance", "doc_id", "labellers")


def _labels(request: Request) -> LabelStore:
    return LabelStore(event_store(request))


@router.get("/{domain}/labels/queue", response_model=LabelQueue, dependencies=[Depends(require_admin)],
            responses=errors(401, 403, 422))
async def label_queue(domain: DomainPath, request: Request,
                      order: Literal["frequent", "uncertain"] = "frequent",
                      limit: int = Query(20, ge=1, le=200), passages: int = Query(10, ge=1, le=50),
                      pending_only: bool = Query(True, description="skip queries whose passages are all graded")
                      ) -> LabelQueue:
    items = await asyncio.to_thread(_labels(request).queue, domain, order, limit, passages, pending_only)
    return LabelQueue(domain=domain, order=order, items=[QueueItem(**i) for i in items])


@router.post("/{domain}/labels", response_model=LabelsStored, dependencies=[Depends(require_admin)],
             responses=errors(401, 403, 422))
async def store_labels(domain: DomainPath, body: LabelsIn, request: Request) -> LabelsStored:
    grades = [(g.passage_id, g.relevance) for g in body.labels]
    try:
        n = await asyncio.to_thread(_labels(request).grade, domain, body.query, grades, body.labeller)
    except InvalidLabel as e:
        raise HTTPException(422, str(e)) from None
    return LabelsStored(domain=domain, stored=n, labeller=body.labeller.strip())


@router.get("/{domain}/labels/summary", response_model=LabelSummary, responses=errors(422))
async def label_summary(domain: DomainPath, request: Request) -> LabelSummary:
    return LabelSummary(**await asyncio.to_thread(_labels(request).summary, domain))


@router.get("/{domain}/labels/export", dependencies=[Depends(require_admin)], responses={
    **errors(401, 403, 422), 200: {"content": {"text/csv": {}, "application/x-ndjson": {}},
                                   "description": "query, document, relevance (rounded mean grade), "
                                                  "doc_id, labellers: what training/sources/labels.py reads"}})
async def export_labels(domain: DomainPath, request: Request,
                        format: Literal["csv", "jsonl"] = "csv") -> Response:
    rows = await asyncio.to_thread(_labels(request).export_rows, domain)
    if format == "jsonl":
        body, media = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "application/x-ndjson"
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS)
        w.writeheader()
        w.writerows(rows)
        body, media = buf.getvalue(), "text/csv"
    return Response(body, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{domain}-labels.{format}"'})
