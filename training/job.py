"""Entry point of a training job: `python -m training.job --job-id ID` (what the Ray job runs).

The job record (state/jobs.py) carries the domain, data spec and config; this process writes its
stage, progress, metrics, gates and outcome back into it, and stops when cancel is requested.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from typing import Any

from state.jobs import JobCancelled, JobStore
from state.settings import Settings
from training.config import TrainConfig
from training.pipeline import DataSpec, GateFailed, Reporter, run

log = logging.getLogger("training.job")


class JobReporter(Reporter):
    """Writes to the job record; progress at most once a second; every write checks for cancel."""

    def __init__(self, store: JobStore, job_id: str):
        self.store, self.job_id, self._last = store, job_id, 0.0
        self._loss: list[dict[str, float]] = []

    def stage(self, name: str) -> None:
        self.store.check_cancel(self.job_id)
        self.store.update(self.job_id, stage=name, progress={"done": 0, "total": 0})
        log.info("stage %s", name)

    def progress(self, done: int, total: int) -> None:
        now = time.time()
        if now - self._last >= 1.0 or done >= total:
            self._last = now
            self.store.check_cancel(self.job_id)  # raising inside a trainer callback stops training
            self.store.update(self.job_id, progress={"done": int(done), "total": int(total)})

    def update(self, **fields: Any) -> None:
        self.store.update(self.job_id, **fields)

    def loss(self, step: int, value: float) -> None:
        """The loss curve so far, in the record (`loss`): the trainer logs ~10 times per epoch."""
        self._loss.append({"step": int(step), "loss": round(float(value), 6)})
        self.store.update(self.job_id, loss=list(self._loss))


def run_job(job_id: str, settings: Settings) -> dict[str, Any]:
    store = JobStore(settings.home)
    record = store.get(job_id)
    if record["status"] != "queued":
        raise SystemExit(f"job {job_id} is {record['status']}, not queued")
    store.update(job_id, status="running", stage="starting", pid=os.getpid())
    rep = JobReporter(store, job_id)
    try:
        cfg = TrainConfig.from_dict(record["config"].get("train", {}))
        spec = DataSpec.from_dict(record["config"].get("data", {}))
        out = run(record["domain"], spec, cfg, settings, activate=bool(record["config"].get("activate")),
                  reporter=rep)
        return store.update(job_id, status="succeeded", stage="done", version=out["model_id"],
                            metrics=out["metrics"], gates=out["gates"], sources=out["sources"],
                            export=out["export"])
    except JobCancelled:
        return store.update(job_id, status="cancelled", stage="cancelled", error="cancelled on request")
    except GateFailed as e:
        return store.update(job_id, status="failed", stage="gates", gates=e.gates, error=str(e))
    except Exception as e:  # noqa: BLE001 - any error ends the job; the record says which
        log.error("job %s failed: %s", job_id, traceback.format_exc())
        return store.update(job_id, status="failed", error=f"{type(e).__name__}: {e}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.job")
    p.add_argument("--job-id", required=True)
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rec = run_job(a.job_id, Settings())  # the launcher passed the service's settings in the environment
    print(f"job {a.job_id}: {rec['status']} {rec.get('version') or rec.get('error') or ''}")
    return 0 if rec["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
