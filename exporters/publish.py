"""Export a model straight into the registry: stage, build, publish (or clean up on failure)."""
from __future__ import annotations

import shutil
from typing import Any

from exporters.build import build_version
from state.registry import Registry


def export_and_publish(registry: Registry, domain: str, source: str, *, activate: bool = False,
                       **build_kwargs: Any) -> tuple[str, dict[str, Any]]:
    staged = registry.stage(domain)
    try:
        manifest = build_version(source, staged, **build_kwargs)
        version = registry.publish(domain, staged, manifest, activate=activate)
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # gone after publish (renamed); left only on failure
    return version, registry.manifest(domain, version)

