"""Build a version directory from a sentence-transformers model: export, fuse, quantize, check, manifest."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from exporters import checks, onnx_export, openvino_export, quantize, vocabulary
from exporters.source import ModelSource, load, prompts_of, resolve
from scoring.files import CONFIG, FUSION, LEXICAL_STATS, MANIFEST, MODEL_ONNX, OPENVINO_PRECISION, VOCAB_MAP
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
                  limits: checks.Limits = checks.Limits(), extra: dict[str, Any] | None = None,
                  openvino: bool = False, lexical: LexicalStats | None = None, fusion: Fusion | None = None,
                  vocabulary_texts: Iterable[str] | None = None, progress: Progress = no_progress) -> dict[str, Any]:
    """Write model.onnx, tokenizer files, config.json and manifest.json into out_dir. model.onnx is the
    first rung of the export ladder (quantize.LADDER: int8 recipes, then fp16, then fp32) that keeps
    parity within `limits`; the manifest records every rung tried. With `openvino`, also
    openvino_model.xml/.bin when it passes the same parity check: static int8 beside an int8 rung, the IR
    at the rung's format beside a wider one. With `lexical` and `fusion`, a hybrid model: lexical.json.gz
    and fusion.json, and the parity and latency checks measure the whole model (neural + lexical + fusion).
    With `vocabulary_texts` (a bi-encoder's domain texts), the embedding table keeps only the pieces they
    use, and vocab_map.npy maps the others to <unk> (exporters/vocabulary.py): parity then compares the
    pruned torch model with its export; what pruning costs is the dev split's to say.

    Raises ExportError if no rung keeps parity. Returns the manifest (without version: the registry adds it).
    """
    src = resolve(source) if isinstance(source, str) else source
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    step = _stepper(progress)
    step("load")
    model = load(src, max_length)
    manifest = _describe(model, src, max_length, out_dir) | (extra or {})
    if vocabulary_texts is not None:
        id_map, manifest["vocabulary"] = vocabulary.prune(model, vocabulary_texts)
        np.save(out_dir / VOCAB_MAP, id_map, allow_pickle=False)
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
        with vocabulary.exporting(model):
            onnx_export.export_onnx(model, src.kind, fp32)
        ladder = _Ladder(model, src.kind, fp32, out_dir, manifest, pairs, rule, threads, openvino, step)
        scorer, served = ladder.climb(limits)
        if openvino and manifest["precision"] == "int8":
            step("openvino")
            manifest["openvino"] = _build_openvino(ladder, scorer)
            if manifest["openvino"]["passed"]:
                served = VersionScorer(out_dir, threads=threads, max_length=max_length, engine="openvino")
    step("latency")
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


class _Ladder:
    """The export ladder: each rung of quantize.LADDER written into the version dir and checked on the
    engine that would serve it: parity against the torch model (one reference for every rung), ms/pair
    at 256 tokens and the version's size.

    An int8 rung is measured with onnxruntime (its OpenVINO static int8 is built once a rung has won);
    a wider rung, with `openvino`, ships the IR at its format too, and OpenVINO's figures are the rung's
    when that IR keeps parity (OpenVINO serves it by default: measured here, the fp16/fp32 IR ran about
    2-3x faster than the same format in onnxruntime: README, Performance)."""

    def __init__(self, model: Any, kind: str, fp32: Path, out_dir: Path, manifest: dict[str, Any],
                 pairs: list[checks.Pair], rule: checks.ParityRule, threads: int, openvino: bool,
                 step: Callable[[str], None]):
        self.model, self.kind, self.fp32, self.out_dir, self.manifest = model, kind, fp32, out_dir, manifest
        self.pairs, self.rule, self.threads, self.openvino, self.step = pairs, rule, threads, openvino, step
        self.reference = checks.torch_scores(model, kind, pairs)
        fused = fp32.with_name("fused.onnx")
        step("fuse")
        self.graph = fused if quantize.fuse(fp32, fused) else fp32
        manifest["fused"] = self.graph == fused

    def climb(self, limits: checks.Limits) -> tuple[VersionScorer, VersionScorer]:
        """(onnxruntime scorer, serving scorer) of the first rung that keeps parity within `limits`; if
        none is within them, the fastest rung that kept parity (the training job's gates then name what
        it exceeds). Sets the manifest's precision, quantization, parity, ms_per_pair_256 and ladder (every
        rung tried). ExportError if no rung keeps parity."""
        tried = self.manifest["ladder"] = []
        for rung in quantize.LADDER:
            entry, scorers = self._check(rung, limits)
            tried.append(entry)
            if entry["passed"]:
                return self._won(entry, scorers)
        kept = [e for e in tried if e["onnxruntime"]["passed"]]
        if not kept:
            raise ExportError("parity check failed at every rung of the export ladder: "
                              + "; ".join(f"{e['rung']}: {e['failure']}" for e in tried))
        best = min(kept, key=lambda e: e["ms_per_pair_256"])
        if best is not tried[-1]:
            self._write(best["rung"])
            if best["serves"] == "openvino":
                self._write_ir(best["rung"])
        return self._won(best, self._scorers(best["serves"]))

    def _won(self, entry: dict[str, Any], scorers: tuple[VersionScorer, VersionScorer]
             ) -> tuple[VersionScorer, VersionScorer]:
        self.manifest.update(precision=entry["precision"], quantization=entry["quantization"],
                             ms_per_pair_256=entry["ms_per_pair_256"],
                             parity=entry["onnxruntime"] | {"recipe": entry["rung"]})
        if "openvino" in entry:  # the IR of a wider rung (beside an int8 one, build_version adds static int8)
            self.manifest["openvino"] = entry["openvino"]
        return scorers

    def _save_manifest(self) -> None:
        (self.out_dir / MANIFEST).write_text(json.dumps(self.manifest, indent=2))  # the scorer reads kind etc.

    def _write(self, rung: str) -> None:
        """model.onnx at `rung`, and no OpenVINO model (a wider rung's IR is added by _write_ir)."""
        quantize.write_rung(self.graph, self.out_dir / MODEL_ONNX, rung)
        openvino_export.remove(self.out_dir)
        self.manifest.pop(OPENVINO_PRECISION, None)
        self.manifest.update(precision=quantize.precision(rung), quantization=quantize.describe(rung))
        self._save_manifest()

    def _write_ir(self, rung: str) -> None:
        # OpenVINO's CPU plugin computes in bf16 by default where the CPU has it: the fp16 rung's IR is
        # checked (and served) at that default, the fp32 rung's is pinned to f32 whatever CPU serves it
        if rung == "fp32":
            self.manifest[OPENVINO_PRECISION] = "f32"
            self._save_manifest()
        openvino_export.convert(self.fp32, self.out_dir, fp16_weights=rung == "fp16")

    def _scorers(self, serves: str) -> tuple[VersionScorer, VersionScorer]:
        rt = VersionScorer(self.out_dir, threads=self.threads, max_length=self.manifest["max_length"])
        return rt, (rt if serves == "onnxruntime" else
                    VersionScorer(self.out_dir, threads=self.threads, max_length=rt.max_length, engine="openvino"))

    def _measure(self, scorer: VersionScorer) -> dict[str, Any]:
        self.step("parity")
        par = self.rule.check(checks.parity(self.model, self.kind, scorer, self.pairs, self.reference))
        self.step("latency")
        return par | {"ms_per_pair_256": checks.ms_per_pair(scorer, tokens=256)}

    def _check(self, rung: str, limits: checks.Limits) -> tuple[dict[str, Any], tuple[VersionScorer, VersionScorer]]:
        self.step("quantize")
        self._write(rung)
        rt, _ = self._scorers("onnxruntime")
        entry: dict[str, Any] = {"rung": rung, "precision": self.manifest["precision"],
                                 "quantization": self.manifest["quantization"], "onnxruntime": self._measure(rt)}
        served = rt
        if self.openvino and entry["precision"] != "int8":
            entry["openvino"], served = self._check_ir(rung, rt)
        entry["serves"] = served.engine
        entry["ms_per_pair_256"] = entry[served.engine]["ms_per_pair_256"]
        entry["size_bytes"] = checks.dir_size(self.out_dir)
        failure = (entry["onnxruntime"].get("failure") if not entry["onnxruntime"]["passed"]
                   else limits.exceeded(entry["ms_per_pair_256"], entry["size_bytes"]))
        entry["passed"] = failure is None
        if failure:
            entry["failure"] = failure
        return entry, (rt, served)

    def _check_ir(self, rung: str, rt: VersionScorer) -> tuple[dict[str, Any], VersionScorer]:
        """A wider rung's OpenVINO IR: written, checked and measured; deleted (onnxruntime serves the rung)
        when it fails parity. Returns (its figures, the scorer that serves the rung)."""
        try:
            self._write_ir(rung)
            ov = VersionScorer(self.out_dir, threads=self.threads, max_length=rt.max_length, engine="openvino")
            par = self._measure(ov) | {"inference_precision": ov.inference_precision}
        except Exception as e:  # an optional engine: its failure must not fail the export
            par = {"passed": False, "failure": f"{type(e).__name__}: {e}"}
        par["quantization"] = openvino_export.describe(rung == "fp16")
        if par["passed"]:
            return par, ov
        openvino_export.remove(self.out_dir)
        self.manifest.pop(OPENVINO_PRECISION, None)
        self._save_manifest()
        return par, rt


def _build_openvino(ladder: _Ladder, scorer: VersionScorer) -> dict[str, Any]:
    """Static int8 for OpenVINO beside an int8 rung, calibrated on the parity pairs as the scorer feeds
    them. A build that fails parity is deleted (onnxruntime keeps serving the version) and the manifest
    says why."""
    pairs, out_dir = ladder.pairs, ladder.out_dir
    calibration = [feed for q, idx in checks.by_query(pairs).items()
                   for feed in scorer.feeds(q, [pairs[i].passage for i in idx])]
    try:
        openvino_export.quantize_static(ladder.fp32, out_dir, calibration)
        ov_scorer = VersionScorer(out_dir, threads=scorer.threads, max_length=scorer.max_length, engine="openvino")
        par = ladder.rule.check(checks.parity(ladder.model, ladder.kind, ov_scorer, pairs, ladder.reference))
    except Exception as e:  # an optional engine: its failure must not fail the export
        par = {"passed": False, "failure": f"{type(e).__name__}: {e}"}
    par["quantization"] = "static int8 (NNCF, transformer preset)"
    if par["passed"]:
        par["ms_per_pair_256"] = checks.ms_per_pair(ov_scorer, tokens=256)
        par["inference_precision"] = ov_scorer.inference_precision
    else:
        openvino_export.remove(out_dir)
    return par


def _is_sigmoid(model: Any) -> bool:
    import torch

    return isinstance(getattr(model, "activation_fn", None), torch.nn.Sigmoid)
