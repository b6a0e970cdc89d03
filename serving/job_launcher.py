"""Starts `python -m training.job --job-id ID` without serving ever importing training or torch.

Order of preference: Ray's JobSubmissionClient when an HTTP job-server address is configured
(`settings.ray_jobs_address`, or RAY_ADDRESS=http://...); else a Ray task on the running cluster (inside
Serve, Ray is already up) that runs the entry point as a child process; else, with no Ray at all
(tests of the bare app), a detached child process.

Either Ray path reserves what the settings say a job uses (`train_num_cpus`, `train_num_gpus`,
`train_resources`), so Ray places the job on a node that has them free and never on cores that serving
replicas reserved.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from state.settings import Settings

ROOT = Path(__file__).resolve().parent.parent  # the project root: training/ sits beside serving/

# What a Ray Jobs submission never uploads with the code (gitignore syntax, relative to ROOT): the
# nodes have the project's environment installed, and data and models live on the shared filesystem.
UPLOAD_EXCLUDES = ["/.venv", "/venv", "/var", "/.git", "/.ci", "/tests", "/deploy", "/docs", "/test-output",
                   "/benchmarks/results",
                   "__pycache__/", ".pytest_cache/", "*.egg-info/", "*.onnx", "*.bin", "*.safetensors", "*.db",
                   "*.log", "*.tar.gz"]


def _command(job_id: str) -> list[str]:
    return [sys.executable, "-m", "training.job", "--job-id", job_id]


def job_env(settings: Settings) -> dict[str, str]:
    """What the job needs on top of the environment of the node it runs on: the settings it rebuilds, and
    torch's thread count from the CPUs it reserved."""
    return {**settings.to_env(), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(max(1, int(settings.train_num_cpus)))}


def _node_env(job_vars: dict[str, str]) -> dict[str, str]:
    """This node's environment (its PATH, the devices Ray assigned the task) plus the job's variables."""
    env = {**os.environ, **job_vars}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def child_env(settings: Settings) -> dict[str, str]:
    """A training child process on this node (a job without Ray, an input check)."""
    return _node_env(job_env(settings))


def _log_path(settings: Settings, job_id: str) -> Path:
    return settings.home / "jobs" / f"{job_id}.log"


def _run_child(job_id: str, job_vars: dict[str, str], log: str) -> int:
    """Body of the Ray task, on whichever node Ray picked: the job runs in its own process so cancel/crash
    cannot hurt the worker."""
    with open(log, "ab") as f:
        return subprocess.call(_command(job_id), env=_node_env(job_vars), cwd=str(ROOT), stdout=f,
                               stderr=subprocess.STDOUT)


def task_options(settings: Settings, job_id: str) -> dict[str, Any]:
    """Ray options of the job's task: its reservation, and a name (`train:<job id>`) that Ray's state
    API and dashboard show with the node it ran on."""
    return {"num_cpus": settings.train_num_cpus, "num_gpus": settings.train_num_gpus,
            "resources": dict(settings.train_resources), "max_retries": 0, "name": f"train:{job_id}"}


def submission(settings: Settings, job_id: str) -> dict[str, Any]:
    """Keyword arguments of `JobSubmissionClient.submit_job` for this job: the same reservation as the task
    (`entrypoint_*`), and the code only as working_dir."""
    entry = " ".join(_command(job_id)[1:])
    excludes = list(UPLOAD_EXCLUDES)
    if settings.home.is_relative_to(ROOT):  # a RERANKER_HOME inside the checkout holds models and the database
        excludes.append(f"/{settings.home.relative_to(ROOT).as_posix()}")
    return {"entrypoint": f"python {entry}", "submission_id": job_id,
            "entrypoint_num_cpus": settings.train_num_cpus, "entrypoint_num_gpus": settings.train_num_gpus,
            "entrypoint_resources": dict(settings.train_resources) or None,
            "runtime_env": {"working_dir": str(ROOT), "excludes": excludes, "env_vars": job_env(settings)}}


def launch(job_id: str, settings: Settings) -> str:
    """Returns a handle string recorded in the job (ray job id / task / pid)."""
    address = settings.ray_jobs_address or os.environ.get("RAY_ADDRESS", "")
    if address.startswith("http"):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(address).submit_job(**submission(settings, job_id))
    log = str(_log_path(settings, job_id))
    try:
        import ray

        if ray.is_initialized():
            ref = ray.remote(_run_child).options(**task_options(settings, job_id)).remote(
                job_id, job_env(settings), log)
            return f"ray-task:{ref.hex()}"
    except ImportError:
        pass
    with open(log, "ab") as f:
        proc = subprocess.Popen(_command(job_id), env=child_env(settings), cwd=str(ROOT), stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return f"pid:{proc.pid}"
