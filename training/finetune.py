"""Fine-tuning with sentence-transformers trainers: cross-encoders (BCE / LambdaLoss) and bi-encoders (MNRL),
up to `epochs` with early stopping on the dev queries (the best epoch's weights are kept)."""
from __future__ import annotations

import copy
import logging
import random
import tempfile
from collections import defaultdict
from typing import Any, Callable

from exporters.source import prompts_of
from training.config import TrainConfig
from training.examples import GRADED_SOURCES, Example

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (steps done, total); raise to cancel
DevScore = Callable[[Any], float]  # the model being trained -> its dev NDCG@10 (higher is better)
LossLog = Callable[[int, float], None]  # (step, training loss the trainer logged)


def _callbacks(progress: Progress | None, model: Any, dev_score: DevScore | None, history: list,
               on_loss: LossLog | None = None, min_delta: float = 0.0) -> list:
    from transformers import TrainerCallback

    out = []
    if progress is not None or on_loss is not None:
        class _Report(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
                if progress is not None:
                    progress(state.global_step, state.max_steps)

            def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
                if on_loss is not None and logs and "loss" in logs:
                    on_loss(state.global_step, float(logs["loss"]))

        out.append(_Report())
    if dev_score is not None:
        class _EarlyStop(TrainerCallback):
            """After each epoch: score the dev queries; stop when it did not improve on the best epoch
            by min_delta (an epoch that improved by less is still kept as the best, restored by
            _keep_best when a later one scores lower)."""
            best: tuple[float, Any] | None = None

            def on_epoch_end(self, args, state, control, **kwargs):  # noqa: ANN001
                score = float(dev_score(model))
                history.append({"epoch": round(state.epoch, 2), "step": state.global_step, "dev_ndcg@10": score})
                log.info("epoch %.2f: dev NDCG@10 %.4f", state.epoch, score)
                gain = None if self.best is None else score - self.best[0]
                if gain is None or gain > 0:
                    self.best = (score, copy.deepcopy(model.state_dict()))
                if gain is not None and gain < min_delta:
                    control.should_training_stop = True

        out.append(_EarlyStop())
    return out


def _keep_best(model: Any, callbacks: list, history: list) -> None:
    """Back to the best epoch's weights when a later epoch scored lower on dev."""
    for cb in callbacks:
        best = getattr(cb, "best", None)
        if best is not None and history and history[-1]["dev_ndcg@10"] < best[0]:
            model.load_state_dict(best[1])
            history.append({"kept_epoch": max(history[:-1], key=lambda h: h["dev_ndcg@10"])["epoch"]})


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
               bf16=cfg.use_bf16(), use_cpu=not torch.cuda.is_available(), save_strategy="no",
               report_to="none", logging_steps=max(1, n_rows // cfg.batch_size // 10),
               dataloader_num_workers=0, disable_tqdm=True, **extra)


def max_rows(cfg: TrainConfig) -> int | None:
    """Training rows that let every epoch fit in max_train_steps."""
    if not cfg.max_train_steps:
        return None
    return max(cfg.batch_size, int(cfg.max_train_steps * cfg.batch_size / max(cfg.epochs, 1e-9)))


def train_cross_encoder(model: Any, examples: list[Example], cfg: TrainConfig, *, new_head: bool,
                        progress: Progress | None = None, dev_score: DevScore | None = None,
                        history: list | None = None, on_loss: LossLog | None = None) -> Any:
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
    if (cap := max_rows(cfg)) and len(ds) > cap:
        ds = ds.select(range(cap))  # rows are shuffled (or per query): a seeded subset
    history = [] if history is None else history
    callbacks = _callbacks(progress, model, dev_score, history, on_loss, cfg.early_stopping_min_delta)
    with tempfile.TemporaryDirectory() as out:
        args = _args(CrossEncoderTrainingArguments, cfg, out, len(ds), **extra)
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=ds, loss=loss, callbacks=callbacks)
        trainer.train()
    _keep_best(model, callbacks, history)
    return model.eval()


def bi_encoder_rows(examples: list[Example], cfg: TrainConfig) -> dict[str, list[str]]:
    """(anchor, positive, negative) rows: up to positives_per_query of each query's best-labelled
    passages, each with one of its negatives; taken round-robin (every query's first positive, then
    every second one, ...) up to the step budget, so a cap drops extra positives before queries."""
    rng = random.Random(cfg.seed)
    groups: dict[str, list[Example]] = defaultdict(list)
    for e in examples:
        groups[e.query_id].append(e)
    per_query = []
    for es in groups.values():
        # relevant: label > 0 (binary, or BEIR grades such as NFCorpus' 1/2); expert grades 1-5: > 1.
        # Positives best grade first (random within a grade); a judged-relevant passage is never a negative.
        rel = [e for e in es if e.label > (1 if e.source in GRADED_SOURCES else 0)]
        neg = [e for e in es if e.label <= (1 if e.source in GRADED_SOURCES else 0)]
        if not neg:
            continue  # MNRL still needs a hard negative column; queries without one are skipped
        rng.shuffle(rel)
        pos = sorted(rel, key=lambda e: -e.label)
        per_query.append([(p, rng.choice(neg)) for p in pos[: cfg.positives_per_query]])
    rng.shuffle(per_query)
    rows = [q[i] for i in range(cfg.positives_per_query) for q in per_query if i < len(q)]
    rows = rows[: max_rows(cfg) or len(rows)]
    rng.shuffle(rows)
    return {"anchor": [p.query for p, _ in rows], "positive": [p.passage for p, _ in rows],
            "negative": [n.passage for _, n in rows]}


def train_bi_encoder(base_path: str, examples: list[Example], cfg: TrainConfig,
                     progress: Progress | None = None, dev_score: DevScore | None = None,
                     history: list | None = None, on_loss: LossLog | None = None) -> Any:
    """In-batch negatives + one mined hard negative per positive (MultipleNegativesRankingLoss), at
    train_max_length tokens (served at max_length); `history` receives the dev score of each epoch."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers, SentenceTransformerTrainingArguments)

    _threads(cfg)
    ds = Dataset.from_dict(bi_encoder_rows(examples, cfg))
    model = SentenceTransformer(base_path, device="cpu")
    prompts = prompts_of(model)  # trained on what it will be served (scoring/windows.Prompts); kept in its config
    extra = {"prompts": {"anchor": prompts.query, "positive": prompts.passage, "negative": prompts.passage}} if prompts else {}
    model.max_seq_length = cfg.train_length
    loss = MultipleNegativesRankingLoss(model)
    history = [] if history is None else history
    callbacks = _callbacks(progress, model, dev_score, history, on_loss, cfg.early_stopping_min_delta)
    with tempfile.TemporaryDirectory() as out:
        # no duplicates in a batch: a repeated passage would be an in-batch false negative
        args = _args(SentenceTransformerTrainingArguments, cfg, out, len(ds),
                     batch_sampler=BatchSamplers.NO_DUPLICATES, **extra)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss, callbacks=callbacks)
        trainer.train()
    _keep_best(model, callbacks, history)
    model.max_seq_length = cfg.max_length
    return model.eval()
