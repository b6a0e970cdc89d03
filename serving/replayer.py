"""Background replay of the impression spill file: no impression waits for an operator after an outage.

Each ingress replica runs one `SpillReplayer` thread (a thread, not a task: it must not depend on which
event loop serves requests or runs the shutdown hooks). It looks at the spill file every `interval_s`;
when events wait, it replays them (state/spill.py: idempotent, row by row where needed). A failed attempt
(the database still down) backs off, doubling up to `max_backoff_s`; the event logger wakes it at once
when a write succeeds again, so the backlog drains as soon as the store answers. Replicas that share the
file take turns: a replica that finds another replaying leaves it to it.

The backlog is the gauge `reranker_events_backlog` (every replica reports the same file: take the max
over replicas, not the sum).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from prometheus_client import Counter, Gauge

from state import spill
from state.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

BACKLOG = Gauge("reranker_events_backlog", "Impression events in the spill file, not yet replayed into the store.")
REPLAYED = Counter("reranker_events_replayed_total", "Spilled impression events the background replay stored.")


class SpillReplayer:
    def __init__(self, store: Store, spill_path: Path | str, quarantine_path: Path | str,
                 interval_s: float = 1.0, max_backoff_s: float = 60.0):
        self.store = store
        self.spill_path, self.quarantine_path = Path(spill_path), Path(quarantine_path)
        self.interval_s, self.max_backoff_s = interval_s, max_backoff_s
        self.delay = interval_s  # until the next look: interval_s, or the backoff after a failure
        self.backlog = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="spill-replayer", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def wake(self) -> None:
        """The store took a write: if events wait, replay now instead of at the end of the backoff."""
        if self.backlog:
            self._wake.set()

    def count(self) -> int:
        self.backlog = spill.backlog(self.spill_path)
        BACKLOG.set(self.backlog)
        return self.backlog

    def replay_once(self) -> spill.ReplayResult | None:
        """One attempt: None when nothing waits or another replica is replaying; raises StoreUnavailable."""
        if not self.count():
            return None
        try:
            result = spill.replay(self.store, self.spill_path, self.quarantine_path, wait=False)
        finally:
            self.count()
        if result is not None:
            REPLAYED.inc(result.stored)
            log.warning("replayed spilled impressions: %s", result)
        return result

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.delay)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.replay_once()
                self.delay = self.interval_s
            except StoreUnavailable as e:
                self.delay = min(self.delay * 2, self.max_backoff_s)
                log.warning("replaying %d spilled impressions: the store is unavailable (%s); next try in %.1f s",
                            self.backlog, str(e)[:200], self.delay)
            except Exception:  # noqa: BLE001 - never let the thread die: log, back off, try again
                self.delay = min(self.delay * 2, self.max_backoff_s)
                log.exception("replaying spilled impressions failed; next try in %.1f s", self.delay)
