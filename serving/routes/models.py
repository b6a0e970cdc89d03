"""Domain and version management over HTTP (same operations as the `reranker` CLI)."""
from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from serving.auth import require_admin
from serving.protocol import DomainConfigUpdate, PromoteRequest
from serving.runtime import OnnxReranker
from serving.upload import UnsafeArchive, extract_version_archive
from state.ids import validate_domain
from state.registry import Registry
from state.settings import get_settings

router = APIRouter(prefix="/v1/domains", tags=["models"])


def _registry(request: Request) -> Registry:
    return request.app.state.registry


def load_check(version_dir: Path) -> None:
    """A version must load and score with the engine the pool will serve it with before it can serve
    (raises on any problem; the other engine's files are still covered by the sha256 check)."""
    OnnxReranker(version_dir, threads=1, engine=get_settings().engine).score("check", ["check"])


def _changed(request: Request, domain: str) -> None:
    request.app.state.service.invalidate(domain)


@router.get("")
async def list_domains(request: Request) -> dict:
    reg = _registry(request)
    return {"domains": [reg.describe(d) for d in reg.domains()]}


@router.get("/{domain}")
async def get_domain(domain: str, request: Request) -> dict:
    return _registry(request).describe(validate_domain(domain))


@router.put("/{domain}", dependencies=[Depends(require_admin)])
async def update_domain(domain: str, body: DomainConfigUpdate, request: Request) -> dict:
    reg = _registry(request)
    out = reg.update_config(validate_domain(domain), ab_split=body.ab_split)
    _changed(request, domain)
    return out


@router.post("/{domain}/versions", status_code=201, dependencies=[Depends(require_admin)])
async def upload_version(domain: str, request: Request, activate: bool = Query(False)) -> dict:
    """Body: a tar.gz of a version directory (model.onnx, tokenizer.json, manifest.json, ...)."""
    reg = _registry(request)
    validate_domain(domain)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "upload.tar.gz"
        with open(archive, "wb") as f:
            async for chunk in request.stream():  # BodyLimit middleware enforces the upload limit
                f.write(chunk)
        try:
            root = extract_version_archive(archive, Path(tmp) / "x")
        except UnsafeArchive as e:
            raise HTTPException(400, f"upload refused: {e}") from e
        try:
            version = await asyncio.to_thread(reg.publish_dir, domain, root, activate, load_check)
        except Exception as e:  # noqa: BLE001 - bad manifest, unloadable graph: the upload's fault
            raise HTTPException(400, f"upload refused: {e}") from e
    _changed(request, domain)
    return {"domain": domain, "version": version, "model_id": f"{domain}@{version}",
            "status": "active" if activate else "candidate"}


@router.post("/{domain}/promote", dependencies=[Depends(require_admin)])
async def promote(domain: str, body: PromoteRequest, request: Request) -> dict:
    reg = _registry(request)
    name = await asyncio.to_thread(reg.promote, validate_domain(domain), body.version, load_check)
    _changed(request, domain)
    return {"domain": domain, "active": name, "model_id": f"{domain}@{name}"}


@router.post("/{domain}/rollback", dependencies=[Depends(require_admin)])
async def rollback(domain: str, request: Request) -> dict:
    name = _registry(request).rollback(validate_domain(domain))
    _changed(request, domain)
    return {"domain": domain, "active": name, "model_id": f"{domain}@{name}"}


@router.delete("/{domain}/versions/{version}", dependencies=[Depends(require_admin)])
async def delete_version(domain: str, version: str, request: Request) -> dict:
    _registry(request).delete_version(validate_domain(domain), version)
    _changed(request, domain)
    return {"domain": domain, "deleted": version}
