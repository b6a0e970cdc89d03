"""The base reranker: exported to ONNX int8 once into the registry, reused on every later start."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from pathlib import Path

from exporters.build import build_version
from state.registry import Registry

log = logging.getLogger(__name__)


def base_slug(name: str, max_length: int, openvino: bool = False) -> str:
    """A directory name for (model, max_length, engine) that cannot collide with a domain id."""
    clean = re.sub(r"[^a-zA-Z0-9_.-]+", "_", name)[-48:]
    return f"{clean}-{max_length}{'-ov' if openvino else ''}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def ensure_base(registry: Registry, name: str, max_length: int = 256, threads: int = 1,
                openvino: bool = False) -> Path:
    target = registry.base_dir(base_slug(name, max_length, openvino))
    if (target / "manifest.json").is_file():
        return target
    log.info("building base model %s into %s (first start only)", name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        build_version(name, tmp, max_length=max_length, threads=threads, openvino=openvino,
                      extra={"domain": None, "version": "base", "model_id": "base"})
        try:
            os.rename(tmp, target)
        except OSError:  # a concurrent starter won the race; its copy is equivalent
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


if __name__ == "__main__":
    # Used by serving/app.py at start-up: build (once) and print the base version dir.
    from state.settings import get_settings

    s = get_settings()
    logging.basicConfig(level=logging.INFO, stream=__import__("sys").stderr)
    print(ensure_base(Registry(s.registry_root), s.base_model, s.max_length, s.intra_op_threads,
                      openvino=s.builds_openvino))
