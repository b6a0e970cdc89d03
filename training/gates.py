"""Gates a candidate must pass before it is published; each reports its figure and threshold."""
from __future__ import annotations

from typing import Any

from exporters.checks import MIN_SPEARMAN, Limits
from training.config import TrainConfig


def gate(name: str, value: float | None, threshold: float, op: str, passed: bool) -> dict[str, Any]:
    return {"gate": name, "value": value, "threshold": threshold, "op": op, "passed": bool(passed)}


# the first stage, the served base (with its request-local BM25) and, for a model fine-tuned from the
# multilingual backbone, that backbone's own base as base routing serves it (training/pipeline.py)
REFERENCES = ("bm25", "base", "multilingual_base")


def quality_gate(metrics: dict[str, dict[str, Any]], min_gain: float) -> dict[str, Any]:
    """The candidate's dev NDCG@10 must reach the stronger of BM25 and the bases + min_gain: a model that
    loses to the first stage it reranks, or to the base it was fine-tuned from, is not published."""
    ref = max((r for r in REFERENCES if r in metrics), key=lambda name: metrics[name]["ndcg@10"])
    have, need = metrics["candidate"]["ndcg@10"], metrics[ref]["ndcg@10"] + min_gain
    return gate("quality", round(have, 4), round(need, 4), ">=", have >= need) | {"reference": ref}


def latency_limit(cfg: TrainConfig, base_ms: float | None) -> float:
    if cfg.max_ms_ratio_to_base is None or base_ms is None:
        return cfg.max_ms_per_pair
    return max(cfg.max_ms_per_pair, round(cfg.max_ms_ratio_to_base * base_ms, 2))


def export_limits(cfg: TrainConfig, base_ms: float | None) -> Limits:
    """The latency and size gates as the export ladder's limits: it stops at the first rung within them."""
    return Limits(latency_limit(cfg, base_ms), cfg.max_size_bytes)


def export_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """Which rung of the export ladder won and what each rung tried cost (the job record's `export`)."""
    served = manifest.get("openvino") if (manifest.get("openvino") or {}).get("passed") else None
    return {"precision": manifest.get("precision"), "quantization": manifest.get("quantization"),
            "openvino": served and served.get("quantization"), "ms_per_pair_256": manifest.get("ms_per_pair_256"),
            "size_bytes": manifest.get("size_bytes"),
            "ladder": [{"rung": e["rung"], "serves": e["serves"], "ms_per_pair_256": round(e["ms_per_pair_256"], 2),
                        "size_bytes": e["size_bytes"], "passed": e["passed"], "failure": e.get("failure"),
                        **{f"spearman_{eng}": e[eng].get("spearman") for eng in ("onnxruntime", "openvino")
                           if eng in e}} for e in manifest.get("ladder", [])]}


def export_gates(manifest: dict[str, Any], cfg: TrainConfig, base_ms: float | None = None,
                 reference: str | None = None) -> list[dict[str, Any]]:
    """reference: the base model whose ms/pair is base_ms (training.pipeline.latency_reference)."""
    par = manifest.get("parity", {})
    ms = float(manifest.get("ms_per_pair_256", float("inf")))
    size = int(manifest.get("size_bytes", 0))
    limit = latency_limit(cfg, base_ms)
    return [gate("parity", par.get("spearman"), MIN_SPEARMAN, ">=", bool(par.get("passed")))
            | {"precision": manifest.get("precision")},
            gate("latency_ms_per_pair", round(ms, 2), limit, "<=", ms <= limit) | {"base_ms_per_pair": base_ms,
                                                                                   "base_model": reference},
            gate("size_bytes", size, cfg.max_size_bytes, "<=", size <= cfg.max_size_bytes)]


def lexical_overhead_gate(manifest: dict[str, Any], cfg: TrainConfig) -> dict[str, Any]:
    """A hybrid model's ms/pair (neural + lexical + fusion) within (1 + max_lexical_overhead) x its
    neural part's, measured with the engine that serves it (exporters/build.py)."""
    o = manifest.get("lexical_overhead") or {}
    ratio, limit = o.get("ratio"), round(1 + cfg.max_lexical_overhead, 4)
    return gate("lexical_overhead", ratio, limit, "<=", ratio is not None and ratio <= limit) | {
        k: o.get(k) for k in ("engine", "ms_per_pair_whole", "ms_per_pair_neural")}


def parity_failed(error: str) -> dict[str, Any]:
    """The parity gate of an export that failed every rung of the export ladder."""
    return gate("parity", None, MIN_SPEARMAN, ">=", False) | {"error": error}


def failed(gates: list[dict[str, Any]]) -> list[str]:
    return [g["gate"] for g in gates if not g["passed"]]


def describe_failure(gates: list[dict[str, Any]]) -> str:
    return "; ".join(f"gate {g['gate']} failed: {g['value']} {g['op']} {g['threshold']} is false"
                     + (f" ({g['error']})" if g.get("error") else "") for g in gates if not g["passed"])
