"""Server paths stay in the logs: answers show a path's last component only.

Job records, manifests (training sources, source model), load errors and upload errors may hold
absolute paths of this server (its home, staging and temp directories, datasets). A regex over the
text, because those strings come from many libraries (onnxruntime, OpenVINO, tarfile, the OS).
"""
from __future__ import annotations

import re
from typing import Any

# An absolute POSIX path of two or more components, not part of a URL ("http://host/a/b").
_ABS_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.@+%=-]+/)+[\w.@+%=-]*")


def _last_component(m: re.Match) -> str:
    parts = [p for p in m.group(0).split("/") if p]
    return parts[-1] if parts else "/"


def paths(text: str) -> str:
    """'failed to load /srv/var/models/x/.staging/ab12/model.onnx: ...' -> 'failed to load model.onnx: ...'"""
    return _ABS_PATH.sub(_last_component, text)


def value(obj: Any) -> Any:
    """`paths` over every string in a JSON-like value (keys included)."""
    if isinstance(obj, str):
        return paths(obj)
    if isinstance(obj, dict):
        return {value(k): value(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [value(v) for v in obj]
    return obj
