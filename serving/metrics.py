"""Prometheus metrics of the ingress, served at GET /metrics.

Label values are bounded and always valid text: a domain is labelled by its id only when it is
registered (or the default domain); any other valid id counts as `_other`, anything else as
`_invalid` (ids never start with "_", so neither can collide with a real domain). One request can
thus neither add a series per made-up domain nor put an unencodable string into the scrape.
"""
from __future__ import annotations

from prometheus_client import Counter, Histogram

from serving.protocol import RerankResponse
from state.ids import InvalidId, validate_domain

OTHER_DOMAIN = "_other"
INVALID_DOMAIN = "_invalid"

LABELS = ("domain", "variant", "model")
REQUESTS = Counter("reranker_requests_total", "Rerank requests answered", LABELS)
ERRORS = Counter("reranker_errors_total", "Rerank requests that failed", ("domain", "status"))
LATENCY = Histogram("reranker_request_latency_seconds", "Rerank latency in the ingress", LABELS,
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
DOCUMENTS = Histogram("reranker_documents_per_request", "Documents per rerank request", ("domain",),
                      buckets=(1, 5, 10, 20, 50, 100, 200, 500, 1000))


def domain_label(domain: object, known: bool) -> str:
    """The `domain` label for a request: `known` says whether the domain is registered (or the default)."""
    try:
        validate_domain(domain)  # type: ignore[arg-type]
    except InvalidId:
        return INVALID_DOMAIN
    return domain if known else OTHER_DOMAIN  # type: ignore[return-value]


def observe(response: RerankResponse, seconds: float, documents: int, domain: str) -> None:
    """One answered rerank; `domain` is its `domain_label`."""
    labels = (domain, response.variant, response.model)
    REQUESTS.labels(*labels).inc()
    LATENCY.labels(*labels).observe(seconds)
    DOCUMENTS.labels(domain).observe(documents)
