"""Asynchronous, batched impression logging.

`log()` only enqueues (microseconds) so /rerank never waits for the database; a background
task writes batches (up to `max_batch` events or `max_delay_s` old) in a worker thread.
Nothing is dropped silently, and one bad event never costs the others: a batch the database
refuses is written row by row (Store.add_impressions_each) and only a row it still refuses is
quarantined (`reason="rejected"`, the quarantine file). While the database is unavailable a batch
is retried, then spilled: every event that cannot be stored (or does not fit in the queue) is
counted in `reranker_events_failed_total{reason}`, logged, and appended to the spill file
(state/spill.py), which the replica's background replayer (serving/replayer.py) stores once the
database answers again; `reranker events replay` does the same by hand.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from serving.replayer import SpillReplayer
from state import spill
from state.store import ImpressionEvent, ShownPassage, Store

log = logging.getLogger(__name__)

# Module level: prometheus_client refuses to register one name twice in a process.
EVENTS_STORED = Counter("reranker_events_stored_total", "Impression events written to the store.")
EVENTS_FAILED = Counter("reranker_events_failed_total",
                        "Impression events that could not be stored.", ["reason"])
EVENTS_PENDING = Gauge("reranker_events_pending", "Impression events queued, not yet stored.")


class EventLogger:
    def __init__(self, store: Store, max_batch: int = 256, max_delay_s: float = 0.2,
                 max_queue: int = 100_000, retries: int = 3, spill_path: Path | str | None = None,
                 quarantine_path: Path | str | None = None, replayer: SpillReplayer | None = None):
        self.store = store
        self.replayer = replayer  # woken when a write succeeds: the store answers again
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self.retries = retries
        self.spill_path = Path(spill_path) if spill_path else None
        self.quarantine_path = Path(quarantine_path) if quarantine_path else None
        self._queue: asyncio.Queue[ImpressionEvent] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._pending: set[str] = set()  # request ids queued or being written
        self._closed = False
        self._closing = False  # close() asked: write what is queued without waiting for more
        self._flushers = 0  # callers waiting in flush(): same, don't wait out max_delay_s
        self.stored = 0
        self.failed = 0

    # ---- producer side -----------------------------------------------------------
    def start(self) -> None:
        """Start the flush task on the running loop (log() does this lazily too)."""
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._queue = asyncio.Queue()
            self._task = self._loop.create_task(self._run(), name="impression-flusher")

    def log(self, event: ImpressionEvent) -> None:
        """Enqueue one impression. Never blocks; safe from the loop thread or any other thread."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self._loop is not None and running is not self._loop:
            # Called from a worker thread (sync handler): hop onto the logger's loop.
            self._loop.call_soon_threadsafe(self._enqueue, event)
            return
        if self._task is None:
            self.start()
        self._enqueue(event)

    def log_rerank(self, response: Any, request: Any, texts: list[str], objs: list[Any],
                   scores: Any, user_key: str | None, latency_ms: float, variant: str | None = None) -> None:
        """The hook RerankService calls: turn one answered rerank into an impression event.
        `response.results` is what the user was shown, in rank order. `variant`: the impression's, when
        it is not the response's (serving/ab.py REQUESTED)."""
        shown = [ShownPassage(position=pos, index=r.index, text=texts[r.index], score=float(r.relevance_score),
                              doc_id=getattr(objs[r.index], "id", None) if objs[r.index] is not None else None)
                 for pos, r in enumerate(response.results)]
        self.log(ImpressionEvent(request_id=response.id, domain=response.domain, variant=variant or response.variant,
                                 model=response.model, query=request.query, latency_ms=float(latency_ms),
                                 n_documents=len(texts), shown=shown, user_key=user_key))

    def log_error(self, domain: str, variant: str, model: str, reason: str) -> None:
        """Record that an arm's model failed a request (the error-rate guardrail), in a worker thread:
        errors are rare, and one that cannot be stored only weakens that guardrail (logged)."""
        def write() -> None:
            try:
                self.store.add_arm_error(domain, variant, model, reason)
            except Exception as e:  # noqa: BLE001 - never fail a request over its error record
                log.warning("could not record the %s error of %s: %s", variant, model, e)
        try:
            asyncio.get_running_loop().run_in_executor(None, write)
        except RuntimeError:  # no loop (a sync caller): write now
            write()

    def _enqueue(self, event: ImpressionEvent) -> None:
        if self._closed:
            self._fail([event], "closed")
            return
        if self._queue.qsize() >= self.max_queue:  # the store is far behind: refuse, but loudly
            self._fail([event], "queue_full")
            return
        self._pending.add(event.request_id)
        EVENTS_PENDING.inc()
        self._queue.put_nowait(event)

    def is_pending(self, request_id: str) -> bool:
        return request_id in self._pending

    # ---- consumer side -----------------------------------------------------------
    async def _run(self) -> None:
        q = self._queue
        while True:
            first = await q.get()
            batch = [first]
            deadline = self._loop.time() + self.max_delay_s
            # Poll instead of wait_for(q.get()): on 3.11 a timed-out get can swallow an item.
            while True:
                while len(batch) < self.max_batch and not q.empty():
                    batch.append(q.get_nowait())
                remaining = deadline - self._loop.time()
                if len(batch) >= self.max_batch or remaining <= 0 or self._closing or self._flushers:
                    break
                await asyncio.sleep(min(0.01, remaining))
            await self._write(batch)
            for _ in batch:
                q.task_done()

    async def _write(self, batch: list[ImpressionEvent]) -> None:
        delay = 0.1
        try:
            for attempt in range(self.retries + 1):
                try:
                    _, refused = await asyncio.to_thread(self.store.add_impressions_each, batch)
                    self.stored += len(batch) - len(refused)
                    EVENTS_STORED.inc(len(batch) - len(refused))
                    if refused:
                        self._reject(refused)
                    if self.replayer is not None:
                        self.replayer.wake()
                    return
                except Exception as e:  # noqa: BLE001 - the store is unavailable (or failed oddly): retry, then spill
                    if attempt == self.retries:
                        log.error("could not store %d impression events: %s", len(batch), e)
                        self._fail(batch, "store_error")
                        return
                    log.warning("storing impressions failed (attempt %d): %s; retrying", attempt + 1, e)
                    await asyncio.sleep(delay)
                    delay *= 2
        finally:
            for e in batch:
                self._pending.discard(e.request_id)
            EVENTS_PENDING.dec(len(batch))

    def _fail(self, events: list[ImpressionEvent], reason: str) -> None:
        self.failed += len(events)
        EVENTS_FAILED.labels(reason=reason).inc(len(events))
        if self.spill_path is None:
            return
        try:
            spill.append(self.spill_path, events)
        except OSError as err:
            log.error("could not spill %d impression events to %s: %s", len(events), self.spill_path, err)

    def _reject(self, refused: list[tuple[ImpressionEvent, str]]) -> None:
        """Rows the database refuses while it accepts their batch mates: quarantined, never retried."""
        self.failed += len(refused)
        EVENTS_FAILED.labels(reason="rejected").inc(len(refused))
        log.error("the store refused %d impression events (quarantined): %s", len(refused), refused[0][1][:300])
        if self.quarantine_path is None:
            return
        try:
            spill.quarantine(self.quarantine_path, [(e.to_dict(), reason) for e, reason in refused])
        except OSError as err:
            log.error("could not quarantine %d impression events: %s", len(refused), err)

    # ---- lifecycle ---------------------------------------------------------------
    async def flush(self) -> None:
        """Wait until everything logged so far is stored (or counted as failed)."""
        if self._queue is None:
            return
        self._flushers += 1
        try:
            await self._queue.join()
        finally:
            self._flushers -= 1

    async def close(self) -> None:
        """Graceful shutdown: refuse new events, store every queued one, stop the task."""
        if self._closed:
            return
        if self._loop is not None and asyncio.get_running_loop() is not self._loop:
            # Shutdown hooks may run on another loop than the requests did: close on ours.
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.close(), self._loop))
            return
        self._closing = True
        await self.flush()
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def stats(self) -> dict[str, Any]:
        return {"pending": len(self._pending), "stored": self.stored, "failed": self.failed}


def install(app: Any, settings: Any) -> EventLogger:
    """Event logging for a FastAPI app: app.state.store / app.state.events / app.state.replayer, and a
    shutdown hook that stores every queued impression (Serve runs ASGI shutdown on replica stop). The
    logger starts itself on the first log() inside the serving event loop; the replayer at once."""
    store = Store(settings.database_url)
    replayer = SpillReplayer(store, settings.spill_path, settings.quarantine_path,
                             interval_s=settings.spill_replay_s, max_backoff_s=settings.spill_replay_max_s)
    events = EventLogger(store, spill_path=settings.spill_path, quarantine_path=settings.quarantine_path,
                         replayer=replayer)
    app.state.store, app.state.events, app.state.replayer = store, events, replayer
    replayer.start()

    async def _drain() -> None:
        await events.close()
        await asyncio.to_thread(replayer.stop)
        store.close()

    app.router.on_shutdown.append(_drain)
    return events
