"""Simulated users against a live service: clicks -> training jobs -> challengers -> the decision rule.

    BENCH_BASE_DIR=... HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.simulation [--phase1 2000] [--budget 3000]

1. A live service (benchmarks/service.py); domain `sim` gets a champion v1 (a copy of the served base model,
   neural only) which runs against the base (the same model fused with request-local BM25) at ab_split 0.5.
2. Simulated users send SciFact *train* queries, each with BM25's own top-k candidates, and click by a
   position-based click model over the qrels (examined with probability 1/(rank+1)^eta, a relevant passage
   clicked with p_click x grade/max grade, any other with `noise`), through the real /feedback API.
3. Real training jobs through the train API: from the click logs raw and with the position-bias correction
   (click_position_bias "ipw"), and a deliberately worse model trained on shuffled labels (a labels file
   whose relevant passages belong to other queries).
4. Each model's ranking of every simulated query is computed ONCE from its published version dir, scored
   exactly as a pool replica scores it (the same scorer class and options; its passage embeddings go to
   the node's embedding store under the pool's keys, which also warms them for the live tests), and
   checked against the live service's responses during the live loops; the same scorer gives its NDCG@10
   on SciFact test (BM25 top-k reranked).
5. One full live loop per challenger kind (worse, then better = ipw): POST challenger, traffic, POST decide
   every `look_every` impressions until the rule decides or the budget ends it.
6. Seeded replays: a model's ranking for a fixed (query, candidates) is deterministic, so replaying seeded
   click streams (user -> arm by the service's own sticky assignment, examination, clicks, noise) over the
   table of rankings through the same decision rule (state/sequential.py) is exact for the click part;
   latency and errors are not simulated there (the live loops exercised the guardrails).
Writes benchmarks/results/simulation.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks import service as svc
from benchmarks.data import SCIFACT
from benchmarks.results_io import RESULTS, save
from serving.ab import assign_arm, shares
from state.ids import model_id
from state.registry import Registry
from state.sequential import CONTINUE, ArmStream, DecisionRule
from state.settings import Settings
from training.bm25 import BM25Index
from training.metrics import score_run
from training.sources.beir import load_beir

DOMAIN = "sim"


@dataclass
class ClickModel:
    """Position-based: P(click) = P(examined | rank) x P(click | examined, grade)."""
    eta: float = 1.0
    p_click: float = 0.9
    noise: float = 0.03
    max_grade: int = 1

    def clicks(self, order: list[str], rel: dict[str, int], rng: random.Random) -> list[int]:
        out = []
        for r, d in enumerate(order):
            if rng.random() < (r + 1) ** -self.eta:
                g = rel.get(d, 0)
                if rng.random() < (self.p_click * g / self.max_grade if g > 0 else self.noise):
                    out.append(r)
        return out


@dataclass
class Sim:
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    cands: dict[str, list[str]]  # query id -> BM25 top-k doc ids, best first
    corpus: dict[str, str]

    def body(self, qid: str, user: str) -> dict[str, Any]:
        return {"query": self.queries[qid], "documents": [{"id": d, "text": self.corpus[d]} for d in self.cands[qid]],
                "user_id": user}


def load_sim(split: str, k: int, max_queries: int | None, seed: int, max_chars: int) -> Sim:
    """SciFact queries of a split with their BM25 top-k over the corpus, passages cut to max_chars (every
    passage a single 256-token window: what keeps 2 CPU cores fast enough for thousands of impressions)."""
    data = load_beir(SCIFACT, split)
    data.corpus = {d: t[:max_chars] for d, t in data.corpus.items()}
    index = BM25Index(data.corpus)
    qids = sorted(data.queries)
    if max_queries:
        qids = sorted(random.Random(seed).sample(qids, min(max_queries, len(qids))))
    hits = index.search({q: data.queries[q] for q in qids}, k)
    qids = [q for q in qids if hits[q]]
    return Sim({q: data.queries[q] for q in qids}, {q: data.qrels[q] for q in qids},
               {q: list(hits[q]) for q in qids}, data.corpus)


def rerank(c: httpx.Client, sim: Sim, qid: str, user: str, domain: str = DOMAIN) -> tuple[dict, list[str]]:
    r = c.post("/rerank", params={"domain": domain}, json=sim.body(qid, user))
    r.raise_for_status()
    body = r.json()
    return body, [sim.cands[qid][x["index"]] for x in body["results"]]


def traffic(c: httpx.Client, sim: Sim, n: int, rng: random.Random, cm: ClickModel, users: int,
            log: list[dict]) -> None:
    """n impressions of simulated users on DOMAIN, clicks sent as feedback; one row per impression in `log`."""
    qids = list(sim.queries)
    for _ in range(n):
        qid, user = rng.choice(qids), f"u{rng.randrange(users)}"
        t0 = time.perf_counter()
        body, order = rerank(c, sim, qid, user)
        ms = (time.perf_counter() - t0) * 1000
        clicked = cm.clicks(order, sim.qrels[qid], rng)
        if clicked:
            fb = c.post("/v1/feedback", json={"request_id": body["id"],
                                              "clicked": [body["results"][p]["index"] for p in clicked]})
            fb.raise_for_status()
        log.append({"model": body["model"], "qid": qid, "order": order, "clicked": clicked, "ms": round(ms, 1)})


def ctr_windows(log: list[dict], every: int) -> list[dict]:
    """CTR per model in consecutive windows of `every` impressions."""
    out = []
    for start in range(0, len(log), every):
        rows = log[start:start + every]
        per: dict[str, list[int]] = {}
        for r in rows:
            per.setdefault(r["model"], []).append(bool(r["clicked"]))
        out.append({"impressions": start + len(rows), "ctr": round(float(np.mean([bool(r["clicked"]) for r in rows])), 4),
                    "ctr_by_model": {m: round(float(np.mean(v)), 4) for m, v in per.items()}})
    return out


def await_model(c: httpx.Client, sim: Sim, domain: str, user: str, model: str, timeout: float = 120) -> None:
    qid = next(iter(sim.queries))
    deadline = time.time() + timeout
    while time.time() < deadline:
        if rerank(c, sim, qid, user, domain)[0]["model"] == model:
            return
        time.sleep(0.5)
    raise SystemExit(f"{domain} not served by {model} after {timeout} s")


def pool_scorer(version_dir: Path, settings: Settings, base: bool = False) -> Any:
    """A version scored exactly as a pool replica scores it (scoring.scorer.VersionScorer with the pool's
    options; the base with request-local BM25), its passage embeddings cached in the node's embedding store
    under the keys the pool uses: scoring the simulated passages here also warms them for the live service.
    A promote warms a new version with the domain's registered passages; a challenger gets no such warm-up,
    and a cold challenger against a warm champion would fail the p95 latency guardrail on cache misses."""
    from scoring.cache import EmbeddingCache
    from scoring.embedding_store import EmbeddingStore
    from scoring.fusion import LocalLexical
    from scoring.scorer import VersionScorer

    s = settings
    cache = EmbeddingCache(256 << 20, EmbeddingStore(s.embedding_store_file, s.embedding_store_mb << 20))
    return VersionScorer(version_dir, threads=2, max_length=s.max_length, batch_size=s.batch_size, engine=s.engine,
                         doc_tokens=s.doc_tokens, window_overlap=s.window_overlap,
                         window_aggregate=s.window_aggregate, cache=cache,
                         local_lexical=LocalLexical(**s.base_lexical()) if base else None)


def rankings(scorer: Any, sim: Sim) -> dict[str, list[str]]:
    """query id -> its candidates best first, as the pool would rank them."""
    out = {}
    for q, ids in sim.cands.items():
        scores = scorer.score(sim.queries[q], [sim.corpus[d] for d in ids]).scores
        out[q] = [ids[i] for i in np.argsort(-np.asarray(scores), kind="stable")]
    return out


def ndcg10(order: dict[str, list[str]], sim: Sim) -> float:
    run = {q: {d: float(len(ids) - i) for i, d in enumerate(ids)} for q, ids in order.items()}
    return round(score_run(sim.qrels, run, 10)["ndcg@10"], 4)


def replay(seed: int, table: dict[str, dict[str, list[str]]], champion: str, challenger: str, sim: Sim,
           cm: ClickModel, rule: DecisionRule, arm_shares: dict[str, float], users: int, look_every: int) -> dict:
    """One seeded click stream over fetched rankings, decided by the rule every look_every impressions."""
    rng = random.Random(seed)
    models = {"domain": champion, "challenger": challenger, "base": "base"}
    arm_of: dict[str, str] = {}
    rows: dict[str, list] = {a: [] for a in models}
    qids = list(sim.queries)
    i = 0
    while True:
        i += 1
        user, qid = f"s{seed}-u{rng.randrange(users)}", rng.choice(qids)
        arm = arm_of.setdefault(user, assign_arm(DOMAIN, user, arm_shares))
        clicked = cm.clicks(table[models[arm]][qid], sim.qrels[qid], rng)
        rows[arm].append((float(i), 10.0, min(clicked) if clicked else None))  # latency not simulated
        if i % look_every == 0:
            champ, ch = ArmStream.from_rows(rows["domain"]), ArmStream.from_rows(rows["challenger"])
            d = rule.decide(champ, ch, 0.0)
            if d["outcome"] != CONTINUE:
                return {"seed": seed, "outcome": d["outcome"], "impressions": i, "challenger_impressions": ch.n,
                        "ctr": {a: round(float(np.mean([r[2] is not None for r in v])), 4) for a, v in rows.items() if v}}


def matching(log: list[dict], table: dict[str, dict[str, list[str]]], kinds: dict[str, str]) -> dict[str, float]:
    """Per model: the share of live responses whose ranking equals the table's."""
    out: dict[str, list[bool]] = {}
    for r in log:
        kind = kinds.get(r["model"])
        if kind is not None:
            out.setdefault(kind, []).append(r["order"] == table[kind][r["qid"]])
    return {k: round(float(np.mean(v)), 4) for k, v in out.items()}


def summarize_replays(runs: list[dict]) -> dict:
    out = {o: sum(r["outcome"] == o for r in runs) for o in ("promote", "reject", "inconclusive")}
    decided = [r["impressions"] for r in runs if r["outcome"] in ("promote", "reject")]
    out |= {"runs": len(runs), "impressions_to_decision_median": float(np.median(decided)) if decided else None,
            "impressions_to_decision_max": max(decided) if decided else None,
            "ctr_mean": {a: round(float(np.mean([r["ctr"][a] for r in runs if a in r["ctr"]])), 4)
                         for a in ("domain", "challenger", "base")}}
    return out


def live_test(c: httpx.Client, sim: Sim, version: str, rng: random.Random, cm: ClickModel, args: argparse.Namespace,
              headers: dict) -> dict:
    """POST challenger, then traffic and POST decide every look_every impressions until an outcome."""
    r = c.post(f"/v1/domains/{DOMAIN}/challenger", json={"version": version, "by": "simulation"}, headers=headers)
    r.raise_for_status()
    log: list[dict] = []
    t0 = time.time()
    while True:
        traffic(c, sim, args.look_every, rng, cm, args.users, log)
        d = c.post(f"/v1/domains/{DOMAIN}/decide", json={"by": "simulation"}, headers=headers)
        d.raise_for_status()
        d = d.json()
        arms = d["stats"]["arms"]
        print(f"  {len(log)} impressions: challenger {arms['challenger']['impressions']} CTR "
              f"{arms['challenger']['ctr']}, champion {arms['champion']['impressions']} CTR {arms['champion']['ctr']}"
              f" -> {d['outcome']}", flush=True)
        if d["outcome"] != CONTINUE or len(log) >= 4 * args.budget:
            break
    return {"version": version, "outcome": d["outcome"], "reasons": d["reasons"], "impressions": len(log),
            "arms": arms, "guardrails": d["stats"].get("guardrails"), "metrics": d["stats"].get("metrics"),
            "decision_id": (d.get("decision") or {}).get("id"), "seconds": round(time.time() - t0, 1),
            "ctr_over_time": ctr_windows(log, args.window), "log": log}


def shuffled_labels(log: list[dict], sim: Sim, path: Path, seed: int) -> int:
    """A labels file whose relevant passages (the clicked ones) belong to other queries, the query's own
    clicked passages graded not relevant: a deliberately worse training set."""
    clicked: dict[str, set[str]] = {}
    for r in log:
        for p in r["clicked"]:
            clicked.setdefault(r["qid"], set()).add(r["order"][p])
    qids = sorted(clicked)
    other = qids[:]
    random.Random(seed).shuffle(other)
    rows = []
    for q, o in zip(qids, other):
        rows += [{"query": sim.queries[q], "document": sim.corpus[d], "relevance": 5, "doc_id": d}
                 for d in sorted(clicked[o] - clicked[q])]
        rows += [{"query": sim.queries[q], "document": sim.corpus[d], "relevance": 1, "doc_id": d}
                 for d in sorted(clicked[q])]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return len(rows)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=10, help="BM25 candidates per query (all shown)")
    ap.add_argument("--max-chars", type=int, default=1000, help="passages cut to this many characters")
    ap.add_argument("--max-queries", type=int, default=150, help="SciFact train queries simulated (0: all)")
    ap.add_argument("--test-queries", type=int, default=100, help="SciFact test queries for NDCG@10 (0: all)")
    ap.add_argument("--phase1", type=int, default=2000, help="impressions before training (champion vs base)")
    ap.add_argument("--budget", type=int, default=3000,
                    help="challenger impressions after which a test is inconclusive (the rule's maximum)")
    ap.add_argument("--look-every", type=int, default=100, help="impressions between two decide calls")
    ap.add_argument("--window", type=int, default=500, help="impressions per CTR-over-time point")
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--train-steps", type=int, default=40)
    ap.add_argument("--eta", type=float, default=1.0, help="examination = 1/(rank+1)^eta")
    ap.add_argument("--noise", type=float, default=0.03)
    ap.add_argument("--no-live", action="store_true", help="skip the live champion/challenger loops")
    ap.add_argument("--no-fusion", action="store_true",
                    help="the click-trained models without the lexical part (served: the fine-tuned neural model)")
    args = svc.own_service_args(ap, RESULTS / "simulation.json", argv)
    t_start = time.time()
    cm = ClickModel(eta=args.eta, noise=args.noise)
    sim = load_sim("train", args.k, args.max_queries, 1, args.max_chars)
    test = load_sim("test", args.k, args.test_queries, 2, args.max_chars)
    print(f"{len(sim.queries)} train queries simulated, {len(test.queries)} test queries, top-{args.k}", flush=True)
    home = svc.fresh_home("reranker-bench-sim-")
    data_dir = home / "simdata"
    data_dir.mkdir()
    os.environ |= {"RERANKER_AUTOPILOT_INTERVAL_S": "0", "RERANKER_DECISION_MAX_IMPRESSIONS": str(args.budget),
                   "RERANKER_DATA_ROOTS": json.dumps([str(data_dir)]), "RERANKER_HOME": str(home)}
    settings = Settings()
    rule = DecisionRule.from_settings(settings)
    reg = Registry(settings.registry_root)
    headers = svc.admin_headers()
    out: dict[str, Any] = {"config": {**{k: v for k, v in vars(args).items() if k not in ("out", "cache")},
                                      "click_model": cm.__dict__, "rule": rule.__dict__,
                                      "train_queries": len(sim.queries), "test_queries": len(test.queries)}}

    def stage(name: str, **fields: Any) -> None:
        out.setdefault("stages", {})[name] = round(time.time() - t_start, 1)
        out.update(fields)
        print(f"[{time.time() - t_start:.0f} s] {name}", flush=True)
        save(args.out, {k: v for k, v in out.items()})

    rng = random.Random(7)
    with svc.service(None, args.port, home) as url, httpx.Client(base_url=url, timeout=600) as c:
        base_dir = reg.base_dir(settings.base_model, settings.max_length, settings.builds_openvino)
        v1 = reg.publish_dir(DOMAIN, base_dir, activate=True)  # same files, same ranking
        await_model(c, sim, DOMAIN, svc.domain_user(DOMAIN), model_id(DOMAIN, v1))
        # each model's ranking of every simulated query, computed once as the pool computes it (checked
        # against the live responses below; it warms the passages for the service), and its NDCG@10 on
        # SciFact test (BM25 top-k reranked)
        table: dict[str, dict[str, list[str]]] = {}
        ndcg: dict[str, float] = {}

        def measure(kind: str, version_dir: Path) -> None:
            scorer = pool_scorer(version_dir, settings, base=kind == "base")
            table[kind], ndcg[kind] = rankings(scorer, sim), ndcg10(rankings(scorer, test), test)
            print(f"  {kind}: test NDCG@10 {ndcg[kind]}", flush=True)

        measure("base", base_dir)
        measure("v1", reg.version_dir(DOMAIN, v1))
        log1: list[dict] = []
        traffic(c, sim, args.phase1, rng, cm, args.users, log1)
        stage("phase1", phase1={"impressions": len(log1), "ctr_over_time": ctr_windows(log1, args.window)})

        # training jobs, all submitted at once (the cluster runs what its CPUs allow)
        cfg = {"epochs": 1, "batch_size": 16, "max_train_steps": args.train_steps, "train_max_length": 128,
               "threads": 1, "early_stopping_queries": 0, "eval_k": args.k, "min_gain": -1.0,
               "max_ms_per_pair": 1e6, "max_lexical_overhead": 1e6, "max_ms_ratio_to_base": None}
        labels = data_dir / "shuffled_labels.jsonl"
        n_labels = shuffled_labels(log1, sim, labels, 3)
        clicks = {**cfg, "fusion": not args.no_fusion}
        bodies = {"raw": {"search_logs": True, "config": {**clicks, "click_position_bias": "none"}},
                  "ipw": {"search_logs": True, "config": {**clicks, "click_position_bias": "ipw"}},
                  "worse": {"labels": [str(labels)], "config": {**cfg, "fusion": False}}}
        jobs, t_jobs = {}, time.time()
        for kind, body in bodies.items():
            r = c.post(f"/v1/domains/{DOMAIN}/train/reranker", json=body, headers=headers)
            r.raise_for_status()
            jobs[kind] = r.json()["job_id"]
        trained = {}
        for kind, job in jobs.items():
            rec = svc.wait_job(c, job)
            if rec["status"] != "succeeded":
                raise SystemExit(f"{kind} job failed: {rec.get('error')}")
            trained[kind] = {"version": rec["version"].split("@")[1], "job": job,
                             "done_after_s": round(time.time() - t_jobs, 1),
                             "dev": {s: m.get("ndcg@10") for s, m in (rec.get("metrics") or {}).items()
                                     if isinstance(m, dict) and "ndcg@10" in m},
                             "search_logs": (rec.get("sources") or {}).get("search_logs")}
            print(f"  {kind}: {rec['version']} dev NDCG@10 {trained[kind]['dev']}", flush=True)
        stage("training", training=trained, shuffled_label_rows=n_labels)

        for kind, t in trained.items():
            measure(kind, reg.version_dir(DOMAIN, t["version"]))
        stage("rankings", test_ndcg10=ndcg)

        # seeded replays over the fetched rankings, against the champion v1
        arm_shares = shares({"active": v1, "challenger": "x"}, settings)
        replays = {}
        for kind in ("worse", "raw", "ipw"):
            runs = [replay(s, table, "v1", kind, sim, cm, rule, arm_shares, args.users, args.look_every)
                    for s in range(args.seeds)]
            replays[kind] = {**summarize_replays(runs), "per_seed": runs}
            print(f"  replays {kind}: {({k: v for k, v in replays[kind].items() if k != 'per_seed'})}", flush=True)
        stage("replays", replays=replays, arm_shares=arm_shares)

        if not args.no_live:
            live = {}
            for kind in ("worse", "ipw"):
                print(f"live test: {kind} ({trained[kind]['version']}) challenges the champion", flush=True)
                res = live_test(c, sim, trained[kind]["version"], rng, cm, args, headers)
                # the live responses against the table: the replays' exactness premise
                res["rankings_matching_table"] = matching(res.pop("log"), table, {
                    "base": "base", model_id(DOMAIN, v1): "v1", model_id(DOMAIN, trained[kind]["version"]): kind})
                live[kind] = res
                print(f"  -> {res['outcome']} after {res['impressions']} impressions: {res['reasons']}", flush=True)
            active = reg.active_version(DOMAIN)
            after = next((k for k, t in trained.items() if t["version"] == active), "v1" if active == v1 else active)
            timeline = c.get(f"/v1/domains/{DOMAIN}/timeline").json()["events"]
            stage("live", live=live, champion={"before": "v1", "after": after,
                                                "test_ndcg10_before": ndcg["v1"],
                                                "test_ndcg10_after": ndcg.get(after)},
                  timeline=timeline)
    out["seconds"] = round(time.time() - t_start, 1)
    return save(args.out, out)


if __name__ == "__main__":
    main()
