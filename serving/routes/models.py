"""Domain and version management over HTTP (same operations as the `reranker` CLI)."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from scoring.scorer import load_check_shipped
from serving import passages, redact
from serving.auth import require_admin
from serving.protocol import (ActiveVersion, Deleted, DomainConfigUpdate, DomainCreate, DomainInfo, DomainList,
                              DomainPath, PromoteRequest, Published, VersionPath, WarmReport, errors)
from serving.upload import publish_upload, received_body
from state.ids import model_id, parse_version, version_name
from state.registry import CURRENT, Registry, RegistryError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/domains", tags=["models"])
ADMIN = [Depends(require_admin)]


def _registry(request: Request) -> Registry:
    return request.app.state.registry


def _changed(request: Request, domain: str) -> None:
    request.app.state.service.invalidate(domain)


@router.get("", response_model=DomainList)
async def list_domains(request: Request) -> DomainList:
    reg = _registry(request)
    return DomainList(domains=[reg.describe(d) for d in reg.domains()])


@router.get("/{domain}", response_model=DomainInfo, responses=errors(404, 422))
async def get_domain(domain: DomainPath, request: Request) -> DomainInfo:
    return DomainInfo(**_registry(request).describe(domain))


@router.post("", status_code=201, response_model=DomainInfo, dependencies=ADMIN,
             responses=errors(401, 403, 409, 422))
async def create_domain(body: DomainCreate, request: Request) -> DomainInfo:
    """A new domain with no versions yet (it answers with the base until one is published)."""
    out = _registry(request).create(body.domain, **body.model_dump(exclude={"domain"}))
    _changed(request, body.domain)
    return DomainInfo(**out)


@router.put("/{domain}", response_model=DomainInfo, dependencies=ADMIN, responses=errors(401, 403, 404, 409, 422))
async def update_domain(domain: DomainPath, body: DomainConfigUpdate, request: Request) -> DomainInfo:
    """Change an existing domain's config (404 for an unknown one: POST /v1/domains creates it)."""
    out = _registry(request).update_config(domain, **body.model_dump())
    _changed(request, domain)
    return DomainInfo(**out)


@router.post("/{domain}/versions", status_code=201, response_model=Published, dependencies=ADMIN,
             responses=errors(400, 401, 403, 413, 422), openapi_extra={"requestBody": {
                 "required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload_version(domain: DomainPath, request: Request, activate: bool = Query(False)) -> Published:
    """Body: a tar.gz of a version directory (model.onnx, tokenizer.json, manifest.json, ...).

    Refused (400) if it is truncated or corrupt, unpacks to more than RERANKER_MAX_UPLOAD_UNPACKED_BYTES
    or RERANKER_MAX_UPLOAD_MEMBERS, holds links/devices/absolute or '..' paths, lists sha256 values in
    its manifest that the files do not have, or ships an engine file (model.onnx, the OpenVINO pair)
    that does not load. Unpacking and checks run in a worker thread, off the event loop."""
    reg, settings = _registry(request), request.app.state.settings
    async with received_body(request, "upload.tar.gz") as archive:
        try:
            version = await asyncio.to_thread(
                publish_upload, reg, domain, archive, archive.parent / "x", load_check_shipped,
                max_bytes=settings.max_upload_unpacked_bytes, max_members=settings.max_upload_members)
        except Exception as e:  # noqa: BLE001 - bad archive or manifest, unloadable graph: the upload's fault
            log.warning("upload to %s refused: %s", domain, e)  # the full text, paths included, for the operator
            raise HTTPException(400, f"upload refused: {redact.paths(str(e))}") from e
    if activate:
        await _activate(request, domain, version)
    _changed(request, domain)
    return Published(domain=domain, version=version, model_id=model_id(domain, version),
                     status="active" if activate else "candidate")


@router.post("/{domain}/promote", response_model=ActiveVersion, dependencies=ADMIN,
             responses=errors(401, 403, 404, 409, 422))
async def promote(domain: DomainPath, body: PromoteRequest, request: Request) -> ActiveVersion:
    """Conditional: 409 naming the active version if it is not `expected_active` (by default the version
    active when the request arrived) when the registry flips; of two promotes at once, one wins. Before
    the flip, the domain's registered and most frequently shown passages are embedded with the version
    (a bi-encoder) for at most RERANKER_PROMOTE_WARM_S; `warm` says how far it got."""
    expected = body.expected_active if "expected_active" in body.model_fields_set else CURRENT
    name, warmed = await _activate(request, domain, body.version, expected)
    return ActiveVersion(domain=domain, active=name, model_id=model_id(domain, name), warm=warmed)


async def _activate(request: Request, domain: str, version: str,
                    expected: Any = CURRENT) -> tuple[str, WarmReport | None]:
    """Load the version in the pool first (that load is its load check), embed the domain's passages with
    it, then flip the registry: it compiles once, and the first request after the promote finds it loaded
    and its passages stored."""
    reg = _registry(request)
    name = version_name(parse_version(version))
    reg.manifest(domain, name)  # 404 for an unknown version
    if expected is CURRENT:  # what is active now, before the load: a promote meanwhile is a conflict
        expected = reg.active_version(domain)
    try:
        await request.app.state.service.scorer.warm(model_id(domain, name))
    except Exception as e:  # noqa: BLE001 - the pool marked it failed; the active version keeps serving
        reg.manifest(domain, name)  # 404 if a DELETE removed it meanwhile
        raise RegistryError(f"cannot promote {model_id(domain, name)}: {e}") from e
    warmed = await passages.warm_version(request.app.state, domain, name)
    warmed = WarmReport(**warmed) if warmed is not None else None
    # sha256 verified again, the expectation checked under the lock
    name = await asyncio.to_thread(reg.promote, domain, name, None, expected)
    _changed(request, domain)
    return name, warmed


@router.post("/{domain}/rollback", response_model=ActiveVersion, dependencies=ADMIN,
             responses=errors(401, 403, 404, 409, 422))
async def rollback(domain: DomainPath, request: Request) -> ActiveVersion:
    name = _registry(request).rollback(domain)
    _changed(request, domain)
    return ActiveVersion(domain=domain, active=name, model_id=model_id(domain, name))


@router.delete("/{domain}/versions/{version}", response_model=Deleted, dependencies=ADMIN,
               responses=errors(401, 403, 404, 409, 422))
async def delete_version(domain: DomainPath, version: VersionPath, request: Request) -> Deleted:
    _registry(request).delete_version(domain, version)
    _changed(request, domain)
    return Deleted(domain=domain, deleted=version)
