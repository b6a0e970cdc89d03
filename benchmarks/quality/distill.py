"""Issue 9 item 5: a cross-encoder distilled from the domain's fine-tuned bi-encoder, on a fixed time budget,
against the product's hybrid domain model on the product's dev split (test is never read).

    HF_HUB_OFFLINE=1 nice -n 5 .venv/bin/python -m benchmarks.quality.distill \\
        --beir ../shared/data/scifact --budget-minutes 40

1. `training.pipeline.prepare` as a training job does it (dev and fusion queries, first-stage candidates).
2. Teacher: the product's fine-tuned bi-encoder (`training.pipeline.fine_tune`, default recipe).
3. Mined pairs: every training query's BM25 top-`--mine-k` (the same first stage) plus its labelled
   positives, each scored by the teacher's cosine over the served windows. MarginMSE rows: (query,
   labelled positive, mined non-positive, scaled teacher margin).
4. Student: MiniLM with the mean-pool one-logit head (`training.finetune.new_cross_encoder`), MarginMSE
   for as many steps as the budget leaves (step time measured first), then a short BCE fine-tune on the
   labels (`train_cross_encoder`). Teacher fine-tune, teacher scoring, probes and both student stages all
   count against the budget; a deadline stops a stage that runs late (a loaded box).
5. Dev: bm25, the served base, the hybrid candidate as the product builds it (teacher + domain BM25,
   weight fitted on the fusion queries), the teacher alone, the student alone, the student + domain BM25
   (weight fitted the same way). Writes benchmarks/results/quality_distill.json.

A measured experiment: the product's defaults and the training pipeline are not changed by it.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.results_io import RESULTS, save
from training.bm25 import BM25Index
from training.evaluate import Scorer
from training.examples import GRADED_SOURCES, Example
from training.pipeline import Reporter

# MNRL (the teacher's loss) trains cosine x 20 as logits: its margins on that scale are the teacher's own
# logit margins. Raw cosine margins (~0.05-0.3) would leave MSE targets, and gradients, near zero against
# a randomly initialised head, and the BCE stage afterwards works on logits anyway.
MARGIN_SCALE = 20.0
SYSTEMS = ("bm25", "base", "hybrid", "teacher_neural", "student", "student_bm25")


@dataclass
class Mined:
    """One training query's pairs: labelled positives and first-stage negatives (doc ids)."""
    query: str
    positives: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)


def _relevant(e: Example) -> bool:
    return e.label > (1 if e.source in GRADED_SOURCES else 0)  # expert grades 1-5: 1 is "not relevant"


def mine(train: list[Example], index: BM25Index, corpus: dict[str, str], k: int) -> dict[str, Mined]:
    """Per training query: its labelled positives and its first-stage top k minus those positives (also
    minus passages whose text equals a positive's). Queries without a positive or a negative are dropped."""
    by_q: dict[str, Mined] = {}
    for e in train:
        m = by_q.setdefault(e.query_id, Mined(e.query))
        if _relevant(e) and e.doc_id is not None and e.doc_id not in m.positives:
            m.positives.append(e.doc_id)
    hits = index.search({q: m.query for q, m in by_q.items()}, k)
    for q, m in by_q.items():
        pos, pos_text = set(m.positives), {corpus[d] for d in m.positives}
        m.negatives = [d for d in hits.get(q, {}) if d not in pos and corpus[d] not in pos_text]
    return {q: m for q, m in by_q.items() if m.positives and m.negatives}


def teacher_scores(scorer: Scorer, mined: dict[str, Mined], corpus: dict[str, str],
                   log: Any = print) -> dict[str, dict[str, float]]:
    """The teacher's score of every mined (query, passage)."""
    out, t0 = {}, time.time()
    for i, (q, m) in enumerate(mined.items(), 1):
        docs = m.positives + m.negatives
        out[q] = dict(zip(docs, (float(s) for s in scorer(m.query, [corpus[d] for d in docs]))))
        if i % max(1, len(mined) // 10) == 0 or i == len(mined):
            log(f"  teacher scoring {i}/{len(mined)} queries, {time.time() - t0:.0f} s")
    return out


def margin_rows(mined: dict[str, Mined], teacher: dict[str, dict[str, float]], corpus: dict[str, str],
                scale: float = MARGIN_SCALE, seed: int = 12) -> dict[str, list]:
    """MarginMSE rows (sentence-transformers' cross-encoder MarginMSELoss: columns query, positive, negative
    in that order, label = gold margin): every labelled positive x every mined negative of a query,
    label = scale x (teacher(positive) - teacher(negative)); seeded shuffle (a step budget takes a prefix
    of the epoch, spread over queries)."""
    rows = [(m.query, corpus[p], corpus[n], scale * (teacher[q][p] - teacher[q][n]))
            for q, m in mined.items() for p in m.positives for n in m.negatives]
    random.Random(seed).shuffle(rows)
    return {"query": [r[0] for r in rows], "positive": [r[1] for r in rows], "negative": [r[2] for r in rows],
            "label": [float(r[3]) for r in rows]}


def label_examples(mined: dict[str, Mined], corpus: dict[str, str], negatives_per_query: int,
                   seed: int = 12) -> list[Example]:
    """The label fine-tune's pairs: every labelled positive (1) and a seeded sample of mined negatives (0)."""
    rng, out = random.Random(seed), []
    for q, m in mined.items():
        out += [Example(q, m.query, corpus[d], 1.0, "beir", d) for d in m.positives]
        negs = rng.sample(m.negatives, min(negatives_per_query, len(m.negatives)))
        out += [Example(q, m.query, corpus[d], 0.0, "negative:bm25", d) for d in negs]
    return out


def cached(scorer: Scorer) -> Scorer:
    """A per-(query, passage) score cache: a cross-encoder's pair scores do not depend on the other
    documents of the request, so the student alone and fused score each dev pair once."""
    memo: dict[tuple[str, str], float] = {}

    def score(query: str, docs: list[str]) -> np.ndarray:
        new = [d for d in dict.fromkeys(docs) if (query, d) not in memo]
        if new:
            for d, s in zip(new, scorer(query, new)):
                memo[(query, d)] = float(s)
        return np.array([memo[(query, d)] for d in docs], dtype=np.float32)
    return score


class _Log(Reporter):
    """Stage names, progress every 10%, the trainer's logged losses (per stage)."""

    def __init__(self) -> None:
        self.name, self.t0, self.losses = "", time.time(), {}

    def stage(self, name: str) -> None:
        self.name, self.t0 = name, time.time()
        print(f"[{name}]", flush=True)

    def progress(self, done: int, total: int) -> None:
        if total and (done == total or done % max(1, total // 10) == 0):
            print(f"  {self.name}: {done}/{total} ({time.time() - self.t0:.0f} s)", flush=True)

    def loss(self, step: int, value: float) -> None:
        self.losses.setdefault(self.name, []).append([step, round(value, 5)])


class _OutOfTime(Exception):
    pass


def _clock_callback(total: int, deadline: float | None, losses: list, name: str) -> Any:
    """Step timestamps (for the probes), progress lines, logged losses, and a stop at the deadline."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.start, self.stamps, self.stopped = time.time(), [], False

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            self.stamps.append(time.time())
            step = state.global_step
            if step == total or step % max(1, total // 20) == 0:
                el = time.time() - self.start
                print(f"  {name}: step {step}/{total}, {el:.0f} s elapsed, ~{el / step * (total - step):.0f} s left",
                      flush=True)
            if deadline is not None and time.time() >= deadline and step < total:
                self.stopped = True
                control.should_training_stop = True
                print(f"  {name}: deadline reached at step {step}/{total}", flush=True)

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if logs and "loss" in logs:
                losses.append([state.global_step, round(float(logs["loss"]), 5)])

    return Clock()


def train_margin_mse(student: Any, rows: dict[str, list], cfg: Any, steps: int, deadline: float | None = None,
                     name: str = "margin-mse") -> dict[str, Any]:
    """MarginMSE (sentence-transformers' CrossEncoderTrainer) for `steps` steps; the new head at
    head_learning_rate as in train_cross_encoder. Returns step timestamps, losses, whether the deadline cut it."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import MarginMSELoss

    from training.finetune import _args

    losses: list = []
    clock = _clock_callback(steps, deadline, losses, name)
    with tempfile.TemporaryDirectory() as out:
        # the product's trainer arguments (training/finetune.py); max_steps overrides its epochs
        args = _args(CrossEncoderTrainingArguments, cfg, out, steps * cfg.batch_size, max_steps=steps,
                     learning_rate_mapping={r"(^|\.)2\.linear\.": cfg.head_learning_rate})
        trainer = CrossEncoderTrainer(model=student, args=args, train_dataset=Dataset.from_dict(rows),
                                      loss=MarginMSELoss(student), callbacks=[clock])
        trainer.train()
    student.eval()
    return {"start": clock.start, "stamps": clock.stamps, "losses": losses, "stopped_at_deadline": clock.stopped}


def train_labels(student: Any, examples: list[Example], cfg: Any, steps: int, lr: float,
                 deadline: float | None = None, name: str = "label-bce") -> dict[str, Any]:
    """The short label fine-tune: training.finetune.train_cross_encoder (BCE, pos_weight = negatives per
    positive), one pass capped at `steps` steps; past the deadline it is cancelled (its documented
    cancellation: the progress callback raises), keeping the weights reached."""
    from training.finetune import train_cross_encoder

    start, stamps, losses, stopped = time.time(), [], [], False
    lcfg = replace(cfg, epochs=1.0, max_train_steps=steps, learning_rate=lr)

    def progress(done: int, total: int) -> None:
        stamps.append(time.time())
        if done == total or done % max(1, total // 10) == 0:
            print(f"  {name}: step {done}/{total}, {time.time() - start:.0f} s elapsed", flush=True)
        if deadline is not None and time.time() >= deadline and done < total:
            raise _OutOfTime()

    try:
        train_cross_encoder(student, examples, lcfg, new_head=False, progress=progress,
                            on_loss=lambda s, v: losses.append([s, round(v, 5)]))
    except _OutOfTime:
        stopped = True
        print(f"  {name}: deadline reached at step {len(stamps)}", flush=True)
    student.eval()
    return {"start": start, "stamps": stamps, "losses": losses, "stopped_at_deadline": stopped}


def step_time(run: dict[str, Any]) -> tuple[float, float]:
    """(seconds per step, fixed seconds before the first step's share) from a probe's timestamps."""
    st = run["stamps"]
    per = (st[-1] - st[0]) / (len(st) - 1) if len(st) > 1 else st[0] - run["start"]
    return per, max(0.0, st[0] - run["start"] - per)


def plan(left: float, margin: tuple[float, float], label: tuple[float, float], label_steps: int,
         reserve: float) -> tuple[int, int]:
    """(MarginMSE steps, label steps) that fit in `left` seconds: the label fine-tune first (shrunk if even
    it does not fit), MarginMSE the rest, `reserve` seconds kept for noise."""
    usable = left - reserve
    lab = max(0, min(label_steps, int((usable - label[1]) / label[0]))) if label[0] > 0 else label_steps
    rest = usable - (label[1] + lab * label[0] if lab else 0.0) - margin[1]
    return max(0, int(rest / margin[0])), lab


def _metrics(result: dict[str, Any], names=SYSTEMS) -> str:
    rows = ["| system | NDCG@5 | NDCG@10 | MRR@10 |", "|---|---:|---:|---:|"]
    for s in names:
        m = result.get(s)
        if m:
            rows.append(f"| {s} | {m['ndcg@5']:.4f} | {m['ndcg@10']:.4f} | {m['mrr@10']:.4f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--beir", required=True, help="BEIR directory (its train split only is read)")
    p.add_argument("--budget-minutes", type=float, default=40.0,
                   help="wall time for teacher fine-tune + teacher scoring + probes + MarginMSE + label fine-tune")
    p.add_argument("--mine-k", type=int, default=30, help="first-stage top k mined per training query")
    p.add_argument("--margin-scale", type=float, default=MARGIN_SCALE)
    p.add_argument("--label-steps", type=int, default=80, help="steps of the label fine-tune (at most)")
    p.add_argument("--label-lr", type=float, default=2e-5, help="label fine-tune learning rate (after distillation)")
    p.add_argument("--label-negatives", type=int, default=4, help="mined negatives per query in the label fine-tune")
    p.add_argument("--probe-steps", type=int, default=4, help="steps timed per stage before the budget is split")
    p.add_argument("--max-queries", type=int, default=None, help="seeded subset of queries (smoke runs)")
    p.add_argument("--set", nargs="*", default=[], help="TrainConfig overrides key=json (smoke runs)")
    p.add_argument("--out", default=str(RESULTS / "quality_distill.json"))
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from benchmarks.latency import machine
    from scoring.fusion import LexicalPart
    from state.settings import Settings
    from training.config import TrainConfig
    from training.evaluate import evaluate_systems, served_scorer, torch_scorer
    from training.finetune import new_cross_encoder
    from training.pipeline import DataSpec, base_scorers, fine_tune, fit_fusion, prepare

    over = {k: json.loads(v) for k, v in (s.split("=", 1) for s in a.set)}
    cfg = TrainConfig.from_dict({**over, **({"max_queries": a.max_queries} if a.max_queries else {})})
    budget = a.budget_minutes * 60
    result: dict[str, Any] = {"dataset": Path(a.beir).name, "machine": machine(), "budget_seconds": budget,
                              "config": {"train": cfg.to_dict(), "mine_k": a.mine_k, "margin_scale": a.margin_scale,
                                         "label_steps_max": a.label_steps, "label_lr": a.label_lr,
                                         "label_negatives": a.label_negatives, "probe_steps": a.probe_steps}}
    seconds: dict[str, float] = {}
    rep = _Log()
    windows = {"max_length": cfg.max_length, "bf16": cfg.use_bf16()}
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home))
        windows["doc_tokens"] = settings.doc_tokens
        t = time.time()
        data = prepare(Path(a.beir).name, DataSpec(beir=a.beir, beir_split="train"), cfg, settings, rep)
        seconds["prepare"] = round(time.time() - t, 1)
        result["split"] = data.stats["split"]

        t0 = time.time()  # the budget starts with the teacher's fine-tune
        deadline = t0 + budget
        teacher, kind, _, epochs = fine_tune(data, cfg, settings, rep)
        seconds["teacher_fine_tune"] = round(time.time() - t0, 1)
        result["teacher"] = {"kind": kind, "epochs": epochs, "losses": rep.losses.get("train", [])}
        assert kind == "bi-encoder", "the teacher is the product's fine-tuned bi-encoder"

        rep.stage("mine")
        t = time.time()
        index = BM25Index(data.corpus, data.lexical.analyzer)
        mined = mine(data.train, index, data.corpus, a.mine_k)
        teacher_neural = torch_scorer(teacher, "bi-encoder", **windows)  # caches passage embeddings (eval too)
        tscores = teacher_scores(teacher_neural, mined, data.corpus)
        rows = margin_rows(mined, tscores, data.corpus, a.margin_scale, cfg.seed)
        labels = label_examples(mined, data.corpus, a.label_negatives, cfg.seed)
        seconds["mine_and_teacher_scoring"] = round(time.time() - t, 1)
        margins = np.array(rows["label"]) / a.margin_scale
        result["mined"] = {"queries": len(mined), "pairs": sum(len(m.positives) + len(m.negatives) for m in mined.values()),
                           "positives": sum(len(m.positives) for m in mined.values()),
                           "margin_rows": len(margins), "label_rows": len(labels),
                           "teacher_margin_cosine": {"mean": round(float(margins.mean()), 4),
                                                     "std": round(float(margins.std()), 4),
                                                     "share_positive": round(float((margins > 0).mean()), 4)}}
        print(f"  {json.dumps(result['mined'])}", flush=True)

        rep.stage("probe")
        t = time.time()
        src = data.source  # the backbone the pipeline chose for the domain
        student = new_cross_encoder(src.path, cfg.train_length)
        probe = copy.deepcopy(student)
        m_probe = train_margin_mse(probe, rows, cfg, a.probe_steps, name="probe margin-mse")
        l_probe = train_labels(probe, labels, cfg, a.probe_steps, a.label_lr, name="probe label-bce")
        del probe
        m_time, l_time = step_time(m_probe), step_time(l_probe)
        seconds["probes"] = round(time.time() - t, 1)
        left = deadline - time.time()
        reserve = max(15.0, 0.02 * budget)
        margin_steps, label_steps = plan(left, m_time, l_time, a.label_steps, reserve)
        label_s = l_time[1] + label_steps * l_time[0] if label_steps else 0.0
        result["plan"] = {"seconds_left": round(left, 1), "reserve_s": reserve,
                          "margin_s_per_step": round(m_time[0], 3), "margin_setup_s": round(m_time[1], 1),
                          "label_s_per_step": round(l_time[0], 3), "label_setup_s": round(l_time[1], 1),
                          "margin_steps": margin_steps, "label_steps": label_steps,
                          "margin_epochs": round(margin_steps * cfg.batch_size / max(1, len(margins)), 3)}
        print(f"  plan: {json.dumps(result['plan'])}", flush=True)

        rep.stage("margin-mse")
        t = time.time()
        student_info: dict[str, Any] = {}
        if margin_steps:
            run = train_margin_mse(student, rows, cfg, margin_steps, deadline=deadline - label_s - reserve / 2)
            student_info["margin_mse"] = {"steps": len(run["stamps"]), "planned": margin_steps,
                                          "losses": run["losses"], "stopped_at_deadline": run["stopped_at_deadline"]}
        seconds["margin_mse"] = round(time.time() - t, 1)
        rep.stage("label-bce")
        t = time.time()
        if label_steps:
            run = train_labels(student, labels, cfg, label_steps, a.label_lr, deadline=deadline)
            student_info["label_bce"] = {"steps": len(run["stamps"]), "planned": label_steps,
                                         "losses": run["losses"], "stopped_at_deadline": run["stopped_at_deadline"]}
        seconds["label_bce"] = round(time.time() - t, 1)
        seconds["training_total"] = round(time.time() - t0, 1)
        result["student"] = student_info
        result["within_budget"] = seconds["training_total"] <= budget

        rep.stage("evaluate")
        student.max_seq_length = cfg.max_length  # served length, as the teacher (trained at train_length)
        # the pipeline's torch base (this temporary home has no served base version, and none is built)
        base = base_scorers(data, replace(cfg, max_ms_ratio_to_base=None), settings)[0]["base"]
        student_neural = cached(torch_scorer(student, "cross-encoder", **windows))
        t_tok, s_tok = teacher.tokenizer.backend_tokenizer, student.tokenizer.backend_tokenizer
        cap = {"doc_tokens": settings.doc_tokens}
        t = time.time()
        fusion_t = fit_fusion(data, teacher_neural, t_tok, cfg, settings)
        seconds["fit_fusion_hybrid"] = round(time.time() - t, 1)
        t = time.time()
        fusion_s = fit_fusion(data, student_neural, s_tok, cfg, settings)
        seconds["fit_fusion_student"] = round(time.time() - t, 1)
        result["fusion"] = {"hybrid": {"lexical_weight": fusion_t.lexical_weight, **(fusion_t.fitted_on or {})},
                            "student_bm25": {"lexical_weight": fusion_s.lexical_weight, **(fusion_s.fitted_on or {})}}
        systems: dict[str, Scorer | None] = {
            "bm25": None,
            "base": base,
            "hybrid": served_scorer(teacher_neural, LexicalPart(data.lexical, fusion_t), t_tok, **cap),
            "teacher_neural": teacher_neural,
            "student": student_neural,
            "student_bm25": served_scorer(student_neural, LexicalPart(data.lexical, fusion_s), s_tok, **cap),
        }
        dev, dev_metrics = data.dev, {}
        for name, scorer in systems.items():
            t = time.time()
            dev_metrics |= evaluate_systems({name: scorer}, dev.queries, dev.qrels, dev.candidates, data.corpus,
                                            cfg.eval_k, progress=lambda n, d, tot: rep.progress(d, tot))
            seconds[f"dev_{name}"] = round(time.time() - t, 1)
            print(f"  {name}: {json.dumps(dev_metrics[name])}", flush=True)
    result["dev"] = dev_metrics
    result["eval"] = {"queries": len(dev.queries), "k": cfg.eval_k,
                      "candidates": "first-stage top-k, nothing injected", "split": "dev carved from train"}
    result["seconds"] = seconds
    best_student = max(dev_metrics["student"]["ndcg@10"], dev_metrics["student_bm25"]["ndcg@10"])
    result["student_beats_hybrid"] = best_student > dev_metrics["hybrid"]["ndcg@10"]
    result["machine"]["loadavg_end"] = os.getloadavg()
    save(Path(a.out), result)
    print(_metrics(dev_metrics))
    print(f"fusion weights: hybrid {fusion_t.lexical_weight}, student+bm25 {fusion_s.lexical_weight}; "
          f"steps: margin-mse {student_info.get('margin_mse', {}).get('steps', 0)}, "
          f"label {student_info.get('label_bce', {}).get('steps', 0)}; seconds: {json.dumps(seconds)}")
    print(f"student beats the hybrid on dev NDCG@10: {result['student_beats_hybrid']}")
    return result


if __name__ == "__main__":
    main()
