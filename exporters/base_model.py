"""The base reranker: exported to ONNX int8 once into the registry, reused on every later start.

`ensure_base(settings)` is the one way to find (and on first use build) the base version directory;
`python -m exporters.base_model [model]` runs it and prints the directory (what serving starts).
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from exporters.build import build_version
from exporters.source import resolve
from scoring.files import MANIFEST
from state.registry import Registry
from state.settings import Settings

log = logging.getLogger(__name__)


def ensure_base(settings: Settings, model: str | None = None) -> Path:
    """model: another base than settings.base_model (the multilingual base of base routing)."""
    s = settings
    model = model or s.base_model
    target = Registry(s.registry_root).base_dir(model, s.max_length, s.builds_openvino)
    if (target / MANIFEST).is_file():
        return target
    log.info("building base model %s into %s (first start only)", model, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        build_version(resolve(model, s.registry_root), tmp, max_length=s.max_length, threads=s.intra_op_threads,
                      openvino=s.builds_openvino, extra={"domain": None, "version": "base", "model_id": "base"})
        try:
            os.rename(tmp, target)
        except OSError:  # a concurrent starter won the race; its copy is equivalent
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    print(ensure_base(Settings(), *sys.argv[1:2]))  # [model]: another base than RERANKER_BASE_MODEL
