"""Fine-tuning with sentence-transformers trainers: cross-encoders (BCE / LambdaLoss) and bi-encoders (MNRL)."""
from __future__ import annotations

import random
import tempfile
from collections import defaultdict
from typing import Any, Callable

from training.config import TrainConfig
from training.examples import Example

Progress = Callable[[int, int], None]  # (steps done, total); raise to cancel
LossLog = Callable[[int, float], None]  # (step, training loss the trainer logged)


def _callback(progress: Progress | None, on_loss: LossLog | None = None) -> list:
    from transformers import TrainerCallback

    if progress is None and on_loss is None:
        return []

    class _Report(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if progress is not None:
                progress(state.global_step, state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if on_loss is not None and logs and "loss" in logs:
                on_loss(state.global_step, float(logs["loss"]))

    return [_Report()]


def _threads(cfg: TrainConfig) -> None:
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)


def new_cross_encoder(base_path: str, max_length: int) -> Any:
    """A cross-encoder from a bi-encoder backbone with a mean-pooling one-logit head.

    The standard head reads [CLS] through BERT's pooler; on mean-pool-trained backbones such as
    all-MiniLM-L6-v2, [CLS] is nearly constant across inputs and training collapses to the prior.
    """
    from sentence_transformers import CrossEncoder
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    import torch

    transformer = Transformer(base_path, transformer_task="feature-extraction", max_seq_length=max_length)
    dim = transformer.get_embedding_dimension()
    pooling = Pooling(dim, pooling_mode="mean")
    head = Dense(dim, 1, activation_function=torch.nn.Identity(), module_output_name="scores")
    return CrossEncoder(modules=[transformer, pooling, head], device="cpu")


def load_cross_encoder(source_kind: str, base_path: str, max_length: int) -> Any:
    from sentence_transformers import CrossEncoder

    if source_kind == "cross-encoder":
        model = CrossEncoder(base_path, device="cpu", max_length=max_length)
    else:
        model = new_cross_encoder(base_path, max_length)
    model.max_length = max_length
    return model


def _args(cls: Any, cfg: TrainConfig, out: str, n_rows: int, **extra: Any) -> Any:
    import torch

    return cls(output_dir=out, num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
               learning_rate=cfg.learning_rate, warmup_ratio=cfg.warmup_ratio, seed=cfg.seed,
               bf16=cfg.bf16, use_cpu=not torch.cuda.is_available(), save_strategy="no",
               report_to="none", logging_steps=max(1, n_rows // cfg.batch_size // 10),
               dataloader_num_workers=0, disable_tqdm=True, **extra)


def train_cross_encoder(model: Any, examples: list[Example], cfg: TrainConfig, *, new_head: bool,
                        progress: Progress | None = None, on_loss: LossLog | None = None) -> Any:
    """BCE with pos_weight for binary labels; LambdaLoss over per-query lists for graded labels."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss, LambdaLoss
    import torch

    _threads(cfg)
    graded = any(e.label not in (0.0, 1.0) for e in examples)
    if graded:
        groups: dict[str, list[Example]] = defaultdict(list)
        for e in examples:
            groups[e.query_id].append(e)
        ds = Dataset.from_dict({"query": [g[0].query for g in groups.values()],
                                "docs": [[e.passage for e in g] for g in groups.values()],
                                "labels": [[float(e.label) for e in g] for g in groups.values()]})
        loss = LambdaLoss(model)
    else:
        rows = list(examples)
        random.Random(cfg.seed).shuffle(rows)
        ds = Dataset.from_dict({"query": [e.query for e in rows], "passage": [e.passage for e in rows],
                                "label": [float(e.label) for e in rows]})
        pos = sum(1 for e in rows if e.label > 0)
        pw = cfg.pos_weight if cfg.pos_weight is not None else max(1.0, (len(rows) - pos) / max(1, pos))
        loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(pw))
    extra = {"learning_rate_mapping": {r"(^|\.)2\.linear\.": cfg.head_learning_rate}} if new_head else {}
    with tempfile.TemporaryDirectory() as out:
        args = _args(CrossEncoderTrainingArguments, cfg, out, len(ds), **extra)
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=ds, loss=loss,
                                      callbacks=_callback(progress, on_loss))
        trainer.train()
    return model.eval()


def train_bi_encoder(base_path: str, examples: list[Example], cfg: TrainConfig,
                     progress: Progress | None = None, on_loss: LossLog | None = None) -> Any:
    """In-batch negatives + one mined hard negative per positive (MultipleNegativesRankingLoss)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers, SentenceTransformerTrainingArguments)

    _threads(cfg)
    rng = random.Random(cfg.seed)
    groups: dict[str, list[Example]] = defaultdict(list)
    for e in examples:
        groups[e.query_id].append(e)
    anchors, positives, negatives = [], [], []
    for es in groups.values():
        pos = [e for e in es if e.label > 0]
        neg = [e for e in es if e.label <= 0]
        if graded := any(e.label not in (0.0, 1.0) for e in es):
            top = max(e.label for e in es)  # graded: the best-labelled passages are the positives
            pos = [e for e in es if e.label == top]
            neg = [e for e in es if e.label < top]
        del graded
        for p in pos:
            if not neg:
                continue  # MNRL still needs a hard negative column; queries without one are skipped
            anchors.append(p.query)
            positives.append(p.passage)
            negatives.append(rng.choice(neg).passage)
    ds = Dataset.from_dict({"anchor": anchors, "positive": positives, "negative": negatives})
    model = SentenceTransformer(base_path, device="cpu")
    model.max_seq_length = cfg.max_length
    loss = MultipleNegativesRankingLoss(model)
    with tempfile.TemporaryDirectory() as out:
        # no duplicates in a batch: a repeated passage would be an in-batch false negative
        args = _args(SentenceTransformerTrainingArguments, cfg, out, len(ds),
                     batch_sampler=BatchSamplers.NO_DUPLICATES)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss,
                                             callbacks=_callback(progress, on_loss))
        trainer.train()
    return model.eval()
