"""The closest thing a user deploys when Infinity is not at hand: a sentence-transformers CrossEncoder behind
uvicorn, one process, `POST /rerank` {query, documents, top_n?} -> Cohere-shaped results. Used by
benchmarks/peer.py as the peer (`--peer st`); not part of the service.

    python -m benchmarks.peer_server MODEL_DIR --port 8200 --threads 2
"""
from __future__ import annotations

import argparse

from pydantic import BaseModel


class Rerank(BaseModel):
    query: str
    documents: list[str]
    top_n: int | None = None


def build(model_dir: str, threads: int, batch_size: int):
    import torch
    from fastapi import FastAPI
    from fastapi.concurrency import run_in_threadpool
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(threads)
    model = CrossEncoder(model_dir, device="cpu", max_length=256)
    app = FastAPI()

    @app.post("/rerank")
    async def rerank(body: Rerank) -> dict:
        scores = await run_in_threadpool(model.predict, [(body.query, d) for d in body.documents],
                                         batch_size=batch_size, show_progress_bar=False)
        order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))[:body.top_n]
        return {"results": [{"index": i, "relevance_score": float(scores[i])} for i in order]}

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True}

    return app


if __name__ == "__main__":
    import uvicorn

    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--port", type=int, default=8200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    uvicorn.run(build(args.model_dir, args.threads, args.batch_size), host="127.0.0.1", port=args.port,
                log_level="warning")
