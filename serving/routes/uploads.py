"""Training data uploads (multipart): RAGAS JSONL, expert labels CSV/JSONL, or a BEIR zip, stored under the
domain once training's own reader accepted them; a bad file gets a 422 naming file:line."""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile

from serving import training_inputs
from serving.auth import require_admin
from serving.protocol import DomainPath, Deleted, UploadInfo, UploadKind, UploadList, errors
from serving.upload import UnsafeArchive, extract_beir_zip
from state.uploads import UploadNotFound, UploadStore, safe_filename

router = APIRouter(prefix="/v1/domains", tags=["training"])
ADMIN = [Depends(require_admin)]
SUFFIXES = {"ragas": (".jsonl", ".json", ".ndjson"), "labels": (".csv", ".jsonl", ".json", ".ndjson"),
            "beir": (".zip",)}


def _uploads(request: Request) -> UploadStore:
    return UploadStore(request.app.state.settings.home)


def _receive(src: UploadFile, dest: Path) -> int:
    with open(dest, "wb") as f:
        shutil.copyfileobj(src.file, f, 1 << 20)
    return dest.stat().st_size


@router.post("/{domain}/uploads", status_code=201, response_model=UploadInfo, dependencies=ADMIN,
             responses=errors(400, 401, 403, 413, 422, 503))
async def upload_data(domain: DomainPath, request: Request, kind: Annotated[UploadKind, Form()],
                      file: Annotated[UploadFile, File(description="the data file (size-limited)")]) -> UploadInfo:
    settings = request.app.state.settings
    name = safe_filename(file.filename or "", default=f"{kind}{SUFFIXES[kind][0]}")
    if not name.lower().endswith(SUFFIXES[kind]):
        raise HTTPException(422, f"file: a {kind} upload must be {' or '.join(SUFFIXES[kind])}, got {name!r}")
    uploads = _uploads(request)
    upload_id, staged = uploads.stage(domain)
    try:
        received = staged / name
        size = await asyncio.to_thread(_receive, file, received)
        if not size:
            raise HTTPException(422, f"file: {name} is empty")
        data = received
        if kind == "beir":
            try:
                data = await asyncio.to_thread(extract_beir_zip, received, staged / "beir",
                                               settings.max_data_unzipped_bytes)
            except UnsafeArchive as e:
                raise HTTPException(422, f"file: {name}: {e}") from None
            received.unlink()
        try:
            checked = await training_inputs.check(settings, kind, data, name)
        except training_inputs.InputsUnavailable as e:
            raise HTTPException(503, f"could not check the upload: {e}") from None
        if not checked["ok"]:
            raise HTTPException(422, f"file: {checked['error']}")
        meta = uploads.commit(domain, upload_id, staged, kind, name, size, str(data.relative_to(staged)),
                              checked["stats"])
    except BaseException:
        uploads.discard(staged)
        raise
    return UploadInfo(**meta)


@router.get("/{domain}/uploads", response_model=UploadList, responses=errors(422))
async def list_uploads(domain: DomainPath, request: Request) -> UploadList:
    """Newest first."""
    return UploadList(uploads=[UploadInfo(**m) for m in _uploads(request).list(domain)])


@router.delete("/{domain}/uploads/{upload_id}", response_model=Deleted, dependencies=ADMIN,
               responses=errors(401, 403, 404, 422))
async def delete_upload(domain: DomainPath, upload_id: str, request: Request) -> Deleted:
    try:
        _uploads(request).delete(domain, upload_id)
    except UploadNotFound:
        raise HTTPException(404, f"unknown upload {upload_id!r} of domain {domain!r}") from None
    return Deleted(domain=domain, deleted=upload_id)
