"""What serving does on its own, in one place: every RERANKER_AUTOPILOT_INTERVAL_S (and on request,
POST /v1/autopilot/run) one round evaluates every running champion/challenger test (state/challenge.py)
and runs the autopilot of each domain that has it switched on:

- a version published by an automatic job enters as the challenger (or, with no active version yet,
  becomes the active one: it passed the offline gates and there is nothing to test it against);
- otherwise, when enough new signal arrived since the domain's last training job (clicked queries,
  expert grades: the domain's thresholds), a training job starts with that job's data and training
  configuration; at most one job per domain, none while a challenger is under test, at most
  RERANKER_AUTOPILOT_MAX_JOBS jobs at once on the cluster, only inside the domain's hours if it set them.

Nothing automatic happens while the kill switch is on, or while impressions are spilling (the test's
and the triggers' data would be incomplete). One replica acts per round (an flock); the others skip.
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import time
from typing import Any, Callable

from serving import job_launcher
from state.autopilot import AutopilotConfig, spill_backlog
from state.challenge import Referee
from state.decisions import DecisionLog
from state.ids import model_id, split_model_id
from state.jobs import TERMINAL, JobStore
from state.registry import Registry, RegistryError
from state.sequential import DecisionRule
from state.settings import Settings
from state.store import Store

log = logging.getLogger(__name__)
AUTOPILOT = "autopilot"


def _in_window(cfg: dict[str, Any], now: float) -> bool:
    start, end = cfg.get("window_start_hour"), cfg.get("window_end_hour")
    if start is None or end is None:
        return True
    hour = time.gmtime(now).tm_hour
    return start <= hour < end if start <= end else hour >= start or hour < end  # a window over midnight


class Autopilot:
    def __init__(self, settings: Settings, registry: Registry, store: Store,
                 launch: Callable[[str, Settings], str] = job_launcher.launch):
        self.settings, self.registry, self.store, self.launch = settings, registry, store, launch
        self.referee = Referee(registry, store, DecisionRule.from_settings(settings))
        self.config = AutopilotConfig(settings.home)
        self.jobs = JobStore(settings.home)
        self.log = DecisionLog(store)

    def blocked(self) -> str | None:
        """Why no automatic action may run now, or None."""
        if self.config.killed():
            return "the kill switch is on"
        if spill_backlog(self.settings):
            return "impressions are spilling to the spill file: the data would be incomplete"
        return None

    def round(self, now: float | None = None) -> list[dict[str, Any]]:
        """One round: [{domain, action, reason}]. action: decided, started, challenged, promoted, waiting or none."""
        if why := self.blocked():
            return [{"domain": None, "action": "none", "reason": why}]
        now = time.time() if now is None else now
        with open(self.settings.home / "autopilot.round.lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return [{"domain": None, "action": "none", "reason": "another replica is running this round"}]
            out = [self._decide(d, now) for d in self.registry.domains() if self.registry.config(d)["challenger"]]
            return out + [self._pilot(d, now) for d in self.config.enabled_domains()]

    def _decide(self, domain: str, now: float) -> dict[str, Any]:
        try:
            r = self.referee.evaluate(domain, AUTOPILOT, now=now)
        except RegistryError as e:  # the test ended meanwhile
            return {"domain": domain, "action": "waiting", "reason": str(e)}
        if r["decision"] is None:
            return {"domain": domain, "action": "waiting", "reason": "; ".join(r["reasons"])}
        return {"domain": domain, "action": "decided", "reason": f"{r['outcome']}: " + "; ".join(r["reasons"])}

    def _pilot(self, domain: str, now: float) -> dict[str, Any]:
        def say(action: str, reason: str) -> dict[str, Any]:
            return {"domain": domain, "action": action, "reason": reason}

        cfg = self.config.domain(domain)
        jobs = self.jobs.list(domain)  # newest first
        ours = next((j for j in jobs if (j.get("config") or {}).get("by") == AUTOPILOT), None)
        if ours and ours["status"] == "succeeded" and ours.get("version") and ours["id"] != cfg["adopted_job"]:
            return self._adopt(domain, ours, say)
        if any(j["status"] not in TERMINAL for j in jobs):
            return say("waiting", "a training job of this domain is running")
        if self.registry.exists(domain) and self.registry.config(domain)["challenger"]:
            return say("waiting", "a challenger is under test")
        if not _in_window(cfg, now):
            return say("waiting", f"outside the hours {cfg['window_start_hour']}-{cfg['window_end_hour']} UTC")
        if not jobs:
            return say("waiting", "no earlier training job to take the configuration from: train once by hand")
        last = jobs[0]
        signals = self.store.signals_since(domain, last["created"])
        due = [k for k, key in (("clicked_queries", "min_clicked_queries"), ("expert_labels", "min_expert_labels"))
               if signals[k] >= cfg[key]]
        counts = (f"{signals['clicked_queries']}/{cfg['min_clicked_queries']} new clicked queries, "
                  f"{signals['expert_labels']}/{cfg['min_expert_labels']} new expert labels")
        if not due:
            return say("waiting", f"not enough new signal since the last training: {counts}")
        running = sum(1 for j in self.jobs.list() if j["status"] not in TERMINAL)
        if running >= self.settings.autopilot_max_jobs:
            return say("waiting", f"{running} training jobs run on the cluster, the limit is "
                                  f"{self.settings.autopilot_max_jobs}")
        conf = last.get("config") or {}
        record = self.jobs.create(domain, "reranker", {"data": conf.get("data", {}), "train": conf.get("train", {}),
                                                       "activate": False, "by": AUTOPILOT})
        try:
            self.jobs.update(record["id"], ray_job_id=self.launch(record["id"], self.settings))
        except Exception as e:  # noqa: BLE001 - the job could not start: its record says so
            self.jobs.update(record["id"], status="failed", error=f"could not start: {e}")
            return say("waiting", f"could not start a training job: {e}")
        return say("started", f"job {record['id']} ({counts}; the configuration of {last['id']})")

    def _adopt(self, domain: str, job: dict[str, Any], say: Callable[..., dict[str, Any]]) -> dict[str, Any]:
        """The version an automatic job published: the challenger, or the active version if none is active."""
        version = split_model_id(job["version"])[1]
        cfg = self.registry.config(domain)
        if cfg["challenger"]:
            return say("waiting", f"{job['version']} waits: a challenger is under test")
        try:
            if cfg["active"]:
                self.registry.set_challenger(domain, version)
                action, summary = "challenged", f"{job['version']} challenges {model_id(domain, cfg['active'])}"
            else:
                self.registry.promote(domain, version)
                action, summary = "promoted", f"{job['version']} is active: no champion to test it against"
        except RegistryError as e:
            action, summary = "skipped", f"{job['version']} cannot be adopted: {e}"
        self.config.update(domain, adopted_job=job["id"])
        self.log.add_event(domain, action, AUTOPILOT, job["version"], {"summary": summary})
        return say(action, summary)


def install(app: Any, settings: Settings) -> Autopilot:
    """app.state.autopilot, and its timer: a round every autopilot_interval_s (0: only on request)."""
    pilot = app.state.autopilot = Autopilot(settings, app.state.registry, app.state.store)

    async def loop() -> None:
        while True:
            await asyncio.sleep(settings.autopilot_interval_s)
            try:
                for action in await asyncio.to_thread(pilot.round):
                    if action["action"] != "waiting" and action["domain"]:
                        log.info("autopilot: %s", action)
                app.state.service.invalidate()
            except Exception:  # noqa: BLE001 - a bad round must not stop the next ones
                log.exception("autopilot round failed")

    async def start() -> None:
        if settings.autopilot_interval_s > 0:
            app.state.autopilot_task = asyncio.get_running_loop().create_task(loop())

    async def stop() -> None:
        task = getattr(app.state, "autopilot_task", None)
        if task is not None:
            task.cancel()

    app.router.on_startup.append(start)
    app.router.on_shutdown.insert(0, stop)
    return pilot
