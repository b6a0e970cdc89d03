"""Graceful stop: refuse new work while the requests in flight finish, then let Serve stop.

`python -m serving.main` (what `make serve` runs) creates a `DrainSwitch` actor before it deploys.
Every ingress replica follows it (`follow_switch`, a long poll: no traffic while serving). On SIGTERM
or SIGINT the runner flips the switch: each ingress answers every new request (except /healthz and
/metrics) 503 + Retry-After, /readyz included, waits for its requests in flight (their impressions
are logged once they are sent) and reports done; the runner waits for every ingress (at most
RERANKER_DRAIN_GRACE_S), then shuts Serve down, which runs each ingress' ASGI shutdown: the
impression logger stores what it holds.

Under a plain `serve run` there is no switch and the ingress never drains (Serve's own stop).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from serving.errors import unavailable

log = logging.getLogger("ray.serve")

ALWAYS_OPEN = frozenset({"/healthz", "/metrics"})  # the process is up and can be scraped while it drains


def switch_name(app_name: str) -> str:
    return f"reranker-drain-{app_name}"


class Drain:
    """One ingress' drain state: whether it drains, and its requests in flight."""

    def __init__(self, retry_after_s: int = 1):
        self.retry_after_s = retry_after_s
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        self.draining = True

    async def idle(self) -> None:
        """Until no request is in flight."""
        await self._idle.wait()


class DrainMiddleware:
    """ASGI: 503 for new requests while draining; counts the others until their response and its
    background tasks (the impression) are done. Added last, so it wraps everything else."""

    def __init__(self, app: Any, drain: Drain):
        self.app, self.drain = app, drain

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        d = self.drain
        if scope["type"] != "http" or scope["path"] in ALWAYS_OPEN:
            return await self.app(scope, receive, send)
        if d.draining:
            response = unavailable("server: stopping; retry on another instance or after the restart",
                                   d.retry_after_s)
            response.headers["Connection"] = "close"
            return await response(scope, receive, send)
        d.in_flight += 1
        d._idle.clear()
        try:
            await self.app(scope, receive, send)
        finally:
            d.in_flight -= 1
            if d.in_flight == 0:
                d._idle.set()


async def follow_switch(drain: Drain) -> None:
    """In an ingress replica: drain when the runner says so, then report this replica done."""
    import ray
    from ray import serve

    ctx = serve.get_replica_context()
    try:
        switch = ray.get_actor(switch_name(ctx.app_name))
    except ValueError:
        return  # not started by serving.main: nothing will ask this replica to drain
    replica = ctx.replica_id.unique_id
    try:
        await switch.register.remote(replica)
        await switch.wait.remote()
        drain.start()
        log.info("draining: refusing new requests, %d in flight", drain.in_flight)
        await drain.idle()
        await switch.done.remote(replica)
    except ray.exceptions.RayActorError:
        log.warning("the drain switch is gone (its runner exited): this replica will not drain")


def _switch_class():
    """The actor class, built on first use so that importing this module needs no Ray."""
    import ray

    @ray.remote(num_cpus=0)
    class DrainSwitch:
        """Held by the runner; ingress replicas long-poll `wait()` and report `done()`."""

        def __init__(self) -> None:
            self._draining = asyncio.Event()
            self.registered: set[str] = set()
            self.finished: set[str] = set()

        async def register(self, replica: str) -> None:
            self.registered.add(replica)

        async def wait(self) -> None:
            await self._draining.wait()

        async def drain(self) -> None:
            self._draining.set()

        async def done(self, replica: str) -> None:
            self.finished.add(replica)

        async def status(self) -> tuple[int, int]:
            """(replicas registered, replicas done)."""
            return len(self.registered), len(self.finished)

    return DrainSwitch


def create_switch(app_name: str):
    return _switch_class().options(name=switch_name(app_name)).remote()
