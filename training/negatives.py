"""Hard negatives for queries that have too few: BM25 and/or the base model, never a known positive."""
from __future__ import annotations

import random
from collections import defaultdict

from training.bm25 import BM25Index
from training.examples import Example


def _by_query(examples: list[Example]) -> dict[str, list[Example]]:
    out: dict[str, list[Example]] = defaultdict(list)
    for e in examples:
        out[e.query_id].append(e)
    return out


def add_negatives(examples: list[Example], corpus: dict[str, str], *, per_query: int = 3,
                  source: str = "bm25", rank_range: tuple[int, int] = (3, 30), random_count: int = 1,
                  base_model: object | None = None, seed: int = 12,
                  index: BM25Index | None = None) -> tuple[list[Example], dict]:
    """Top up each query to `per_query` mined negatives (+ `random_count` random ones).

    Mined negatives are drawn from ranks [lo, hi) of the miner's list: the very top ranks of an
    unlabelled corpus are often relevant, so they are skipped. Returns (examples + negatives, stats).
    """
    rng = random.Random(seed)
    groups = _by_query(examples)
    ids = list(corpus)
    text_to_id = {t: i for i, t in corpus.items()}
    queries = {q: es[0].query for q, es in groups.items()}
    lo, hi = rank_range
    ranked: dict[str, list[str]] = {q: [] for q in queries}
    if source in ("bm25", "both") and per_query > 0:
        index = index or BM25Index(corpus)
        for q, hits in index.search(queries, hi).items():
            ranked[q] += list(hits)[lo:hi]
    if source in ("model", "both") and per_query > 0 and base_model is not None:
        ranked_model = _model_ranked(base_model, queries, corpus, hi)
        for q in queries:
            ranked[q] += [d for d in ranked_model[q][lo:hi] if d not in ranked[q]]
    out, mined, randoms = list(examples), 0, 0
    for q, es in groups.items():
        known = {e.doc_id or text_to_id.get(e.passage) for e in es if e.label > 0} | {e.passage for e in es}
        have = sum(1 for e in es if e.label <= 0)
        pool = [d for d in ranked[q] if d not in known and corpus[d] not in known]
        # interleave sources deterministically, then sample from the top of the range
        take = pool[: max(0, per_query - have) * 2]
        rng.shuffle(take)
        for d in take[: max(0, per_query - have)]:
            out.append(Example(q, queries[q], corpus[d], 0.0, f"negative:{source}", d))
            known.add(d)
            mined += 1
        for _ in range(random_count):
            for _try in range(10):
                d = rng.choice(ids)
                if d not in known:
                    out.append(Example(q, queries[q], corpus[d], 0.0, "negative:random", d))
                    known.add(d)
                    randoms += 1
                    break
    return out, {"mined": mined, "random": randoms, "source": source, "per_query": per_query,
                 "range": [lo, hi]}


def _model_ranked(model: object, queries: dict[str, str], corpus: dict[str, str], k: int) -> dict[str, list[str]]:
    """Nearest documents by the base bi-encoder, through sentence-transformers' mine_hard_negatives."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    ids = list(corpus)
    text_to_id = {t: i for i, t in corpus.items()}
    qids = list(queries)
    # mine_hard_negatives needs an (anchor, positive) pair; the positive is only excluded from results.
    ds = Dataset.from_dict({"anchor": [queries[q] for q in qids], "positive": ["\u2063"] * len(qids)})
    mined = mine_hard_negatives(ds, model, corpus=[corpus[i] for i in ids], range_max=k,
                                num_negatives=k, sampling_strategy="top", output_format="n-tuple",
                                verbose=False, batch_size=32)
    out: dict[str, list[str]] = {q: [] for q in qids}
    anchor_to_q = {queries[q]: q for q in qids}
    for row in mined:
        q = anchor_to_q[row["anchor"]]
        out[q] = [text_to_id[v] for key, v in row.items() if key.startswith("negative") and v in text_to_id]
    return out
