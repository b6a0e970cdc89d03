"""Availability under load: the per-request deadline, and `Unavailable`, the 503 + Retry-After that a
passed deadline, a full queue, a lost replica or a stopping service all end in.

The deadline is set once per request (RerankService) and read wherever the request's work goes next
(PoolClient sends the time left to the pool replica, which stops scoring when it runs out), so a
request that will be answered 503 stops costing the pool within one batch.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

_deadline: ContextVar[float | None] = ContextVar("reranker_deadline", default=None)


class Unavailable(Exception):
    """Answered 503 with a Retry-After header: the client may try again (here or elsewhere) later."""

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """The request's deadline for the code (and the tasks it starts) inside the block."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left before the current request's deadline (never negative); None outside a request."""
    d = _deadline.get()
    return None if d is None else max(0.0, d - time.monotonic())
