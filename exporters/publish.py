"""Export a model straight into the registry: stage, build, publish (or clean up on failure)."""
from __future__ import annotations

from typing import Any

from exporters.build import Progress, build_version, no_progress
from exporters.source import resolve
from state.registry import Registry
from state.settings import Settings


def export_and_publish(registry: Registry, domain: str, source: str, settings: Settings, *,
                       activate: bool = False, progress: Progress = no_progress) -> tuple[str, dict[str, Any]]:
    """Build with the service's max length, threads and engines, then publish as the next version."""
    staged = registry.stage(domain)
    try:
        manifest = build_version(resolve(source, settings.registry_root), staged, max_length=settings.max_length,
                                 threads=settings.intra_op_threads, openvino=settings.builds_openvino,
                                 progress=progress)
        version = registry.publish(domain, staged, manifest, activate=activate)
    finally:
        registry.unstage(domain, staged)  # gone after publish (renamed); left only on failure
    return version, registry.manifest(domain, version)
