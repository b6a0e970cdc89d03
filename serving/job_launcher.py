"""Starts `python -m training.job --job-id ID` without serving ever importing training or torch.

Order of preference: Ray's JobSubmissionClient when an HTTP job-server address is configured
(RERANKER_RAY_JOBS_ADDRESS, or RAY_ADDRESS=http://...); else a zero-CPU Ray task on the running
cluster (inside Serve, Ray is already up) that runs the entry point as a child process; else, with
no Ray at all (tests of the bare app), a detached child process.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from state.settings import Settings

ROOT = Path(__file__).resolve().parent.parent  # the project root: training/ sits beside serving/


def _command(job_id: str) -> list[str]:
    return [sys.executable, "-m", "training.job", "--job-id", job_id]


def child_env(settings: Settings) -> dict[str, str]:
    """A training child process (job, input check) rebuilds these settings from its environment."""
    env = {**os.environ, **settings.to_env(), "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _log_path(settings: Settings, job_id: str) -> Path:
    return settings.home / "jobs" / f"{job_id}.log"


def _run_child(cmd: list[str], env: dict[str, str], cwd: str, log: str) -> int:
    """Body of the Ray task: the job runs in its own process so cancel/crash cannot hurt the worker."""
    with open(log, "ab") as f:
        return subprocess.call(cmd, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)


def launch(job_id: str, settings: Settings) -> str:
    """Returns a handle string recorded in the job (ray job id / task / pid)."""
    env = child_env(settings)
    address = os.environ.get("RERANKER_RAY_JOBS_ADDRESS") or os.environ.get("RAY_ADDRESS", "")
    if address.startswith("http"):
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(address)
        entry = " ".join(_command(job_id)[1:])
        return client.submit_job(entrypoint=f"python {entry}", submission_id=job_id,
                                 runtime_env={"working_dir": str(ROOT), "env_vars": {
                                     k: v for k, v in env.items() if k.startswith(("RERANKER_", "HF_"))}})
    log = str(_log_path(settings, job_id))
    try:
        import ray

        if ray.is_initialized():
            task = ray.remote(num_cpus=0, max_retries=0)(_run_child)
            ref = task.remote(_command(job_id), env, str(ROOT), log)
            return f"ray-task:{ref.hex()}"
    except ImportError:
        pass
    with open(log, "ab") as f:
        proc = subprocess.Popen(_command(job_id), env=env, cwd=str(ROOT), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return f"pid:{proc.pid}"
