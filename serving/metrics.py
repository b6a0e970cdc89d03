"""Prometheus metrics of the ingress, served at GET /metrics."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

from serving.protocol import RerankResponse

LABELS = ("domain", "variant", "model")
REQUESTS = Counter("reranker_requests_total", "Rerank requests answered", LABELS)
ERRORS = Counter("reranker_errors_total", "Rerank requests that failed", ("domain", "status"))
LATENCY = Histogram("reranker_request_latency_seconds", "Rerank latency in the ingress", LABELS,
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
DOCUMENTS = Histogram("reranker_documents_per_request", "Documents per rerank request", ("domain",),
                      buckets=(1, 5, 10, 20, 50, 100, 200, 500, 1000))


def observe(response: RerankResponse, seconds: float, documents: int) -> None:
    labels = (response.domain, response.variant, response.model)
    REQUESTS.labels(*labels).inc()
    LATENCY.labels(*labels).observe(seconds)
    DOCUMENTS.labels(response.domain).observe(documents)
