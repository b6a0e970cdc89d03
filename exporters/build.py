"""Build a version directory from a sentence-transformers model: export, fuse, quantize, check, manifest."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable

from exporters import checks, onnx_export, openvino_export, quantize
from exporters.source import ModelSource, load, prompts_of, resolve
from scoring.files import CONFIG, FUSION, LEXICAL_STATS, MANIFEST, MODEL_ONNX
from scoring.fusion import Fusion
from scoring.lexical import LexicalStats
from scoring.scorer import VersionScorer

Progress = Callable[[str, int, int], None]  # (stage, done, total)
STAGES = ("load", "export", "fuse", "quantize", "parity", "openvino", "latency")


class ExportError(Exception):
    """The model could not be exported, or its export failed a check; the message says which."""


def no_progress(stage: str, done: int, total: int) -> None:
    pass


def build_version(source: str | ModelSource, out_dir: Path, *, max_length: int = 256, threads: int = 1,
                  pairs: list[checks.Pair] | None = None, rule: checks.ParityRule = checks.ParityRule(),
                  extra: dict[str, Any] | None = None, openvino: bool = False,
                  lexical: LexicalStats | None = None, fusion: Fusion | None = None,
                  progress: Progress = no_progress) -> dict[str, Any]:
    """Write model.onnx (int8), tokenizer files, config.json and manifest.json into out_dir; with
    `openvino`, also openvino_model.xml/.bin (static int8) when it passes the same parity check; with
    `lexical` and `fusion`, a hybrid model: lexical.json.gz and fusion.json, and the parity and latency
    checks measure the whole model (neural + lexical + fusion).

    Raises ExportError if parity fails. Returns the manifest (without version: the registry adds it).
    """
    src = resolve(source) if isinstance(source, str) else source
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    step = _stepper(progress)
    step("load")
    model = load(src, max_length)
    manifest = _describe(model, src, max_length, out_dir) | (extra or {})
    if (lexical is None) != (fusion is None):
        raise ValueError("a hybrid model needs both lexical statistics and fusion weights")
    if lexical is not None and fusion is not None:
        lexical.save(out_dir / LEXICAL_STATS)
        fusion.save(out_dir / FUSION)
        manifest["lexical"] = {"language": lexical.analyzer.language, "analyzer": lexical.analyzer.config(),
                               "passages": lexical.n_docs, "terms": len(lexical.df), "k1": lexical.k1, "b": lexical.b}
        manifest["fusion"] = {"type": "zsum", "weights": list(fusion.weights)}
    pairs = pairs or checks.load_sample_pairs()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        step("export")
        onnx_export.export_onnx(model, src.kind, fp32)
        scorer, par = _quantize_ladder(model, src.kind, fp32, out_dir, manifest, pairs, rule, threads, step)
        manifest["parity"] = par
        served = scorer
        if openvino:
            step("openvino")
            manifest["openvino"] = _build_openvino(model, src.kind, fp32, out_dir, scorer, pairs, rule)
            if manifest["openvino"]["passed"]:
                served = VersionScorer(out_dir, threads=threads, max_length=max_length, engine="openvino")
    step("latency")
    manifest["ms_per_pair_256"] = checks.ms_per_pair(scorer, tokens=256)
    if scorer.hybrid:
        manifest["lexical_overhead"] = checks.lexical_overhead(served, out_dir)
    manifest["latency_threads"] = threads
    manifest["size_bytes"] = checks.dir_size(out_dir)
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    progress("done", len(STAGES), len(STAGES))
    return manifest


def _stepper(progress: Progress) -> Callable[[str], None]:
    return lambda stage: progress(stage, STAGES.index(stage), len(STAGES))


def _describe(model: Any, src: ModelSource, max_length: int, out_dir: Path) -> dict[str, Any]:
    """Save tokenizer + config into the version; the manifest's description of the model."""
    tokenizer = model.tokenizer
    tokenizer.save_pretrained(str(out_dir))
    model[0].model.config.to_json_file(str(out_dir / CONFIG))
    if src.kind == "cross-encoder":
        activation = "sigmoid" if _is_sigmoid(model) else "identity"
    else:
        activation = "cosine"
    out = {"kind": src.kind, "source_model": src.name, "max_length": max_length, "activation": activation,
           "pad_token_id": int(tokenizer.pad_token_id or 0)}
    if src.kind == "bi-encoder" and (prompts := prompts_of(model)):
        out["prompts"] = prompts.to_manifest()  # the scorer puts them in front of what the model reads
    return out


def _quantize_ladder(model: Any, kind: str, fp32: Path, out_dir: Path, manifest: dict[str, Any],
                     pairs: list[checks.Pair], rule: checks.ParityRule, threads: int,
                     step: Callable[[str], None]) -> tuple[VersionScorer, dict[str, Any]]:
    """Fuse, then dynamic int8 with each recipe in turn until one passes parity; ExportError if none."""
    fused = fp32.with_name("fused.onnx")
    step("fuse")
    graph = fused if quantize.fuse(fp32, fused) else fp32
    failures = []
    for recipe in quantize.RECIPES:
        step("quantize")
        quantize.quantize_int8(graph, out_dir / MODEL_ONNX, recipe)
        manifest.update({"quantization": f"dynamic int8 per-channel ({recipe})", "fused": graph == fused})
        (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))  # the scorer reads kind etc.
        scorer = VersionScorer(out_dir, threads=threads, max_length=manifest["max_length"])
        step("parity")
        par = rule.check(checks.parity(model, kind, scorer, pairs)) | {"recipe": recipe}
        if par["passed"]:
            return scorer, par
        failures.append(f"{recipe}: {par['failure']}")
    raise ExportError("parity check failed for every quantization recipe: " + "; ".join(failures))


def _build_openvino(model: Any, kind: str, fp32: Path, out_dir: Path, scorer: VersionScorer,
                    pairs: list[checks.Pair], rule: checks.ParityRule) -> dict[str, Any]:
    """Static int8 for OpenVINO, calibrated on the parity pairs as the scorer feeds them. A build that
    fails parity is deleted (onnxruntime keeps serving the version) and the manifest says why."""
    calibration = [feed for q, idx in checks.by_query(pairs).items()
                   for feed in scorer.feeds(q, [pairs[i].passage for i in idx])]
    try:
        openvino_export.quantize_static(fp32, out_dir, calibration)
        ov_scorer = VersionScorer(out_dir, threads=scorer.threads, max_length=scorer.max_length, engine="openvino")
        par = rule.check(checks.parity(model, kind, ov_scorer, pairs))
    except Exception as e:  # an optional engine: its failure must not fail the export
        par = {"passed": False, "failure": f"{type(e).__name__}: {e}"}
    par["quantization"] = "static int8 (NNCF, transformer preset)"
    if par["passed"]:
        par["ms_per_pair_256"] = checks.ms_per_pair(ov_scorer, tokens=256)
    else:
        openvino_export.remove(out_dir)
    return par


def _is_sigmoid(model: Any) -> bool:
    import torch

    return isinstance(getattr(model, "activation_fn", None), torch.nn.Sigmoid)
