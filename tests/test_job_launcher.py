"""What a training job asks Ray for, and what a Ray Jobs submission uploads (no cluster needed)."""
from __future__ import annotations

import zipfile

from serving import job_launcher
from serving.job_launcher import ROOT, job_env, submission, task_options
from state.settings import Settings


def test_settings_survive_the_trip_through_the_environment(monkeypatch, tmp_path):
    s = Settings(home=tmp_path, pool_resources={"reranker_pool": 1}, train_resources={"gpu_node": 0.5},
                 train_num_cpus=3)
    for k, v in s.to_env().items():
        monkeypatch.setenv(k, v)
    assert Settings() == s


def test_the_job_reserves_what_the_settings_say(tmp_path):
    s = Settings(home=tmp_path, train_num_cpus=3, train_num_gpus=1, train_resources={"trainer": 1})
    opts = task_options(s, "train-x-1")
    assert (opts["num_cpus"], opts["num_gpus"], opts["resources"]) == (3, 1, {"trainer": 1})
    assert opts["name"] == "train:train-x-1" and opts["max_retries"] == 0
    sub = submission(s, "train-x-1")
    assert (sub["entrypoint_num_cpus"], sub["entrypoint_num_gpus"], sub["entrypoint_resources"]) == (3, 1, {"trainer": 1})
    assert sub["entrypoint"] == "python -m training.job --job-id train-x-1" and sub["submission_id"] == "train-x-1"
    env = sub["runtime_env"]["env_vars"]
    assert env["OMP_NUM_THREADS"] == "3" and env["RERANKER_TRAIN_NUM_CPUS"] == "3.0"
    assert env == job_env(s)


def test_ray_jobs_upload_the_code_only(tmp_path):
    """Zip the working_dir the way Ray's job client does (its packaging function, with .gitignore not
    consulted so the excludes alone are tested): no virtualenv, tests, results or models, and the
    exporter's packaged calibration data still in."""
    from ray._private.runtime_env.packaging import create_package

    runtime_env = submission(Settings(home=tmp_path), "train-x-1")["runtime_env"]
    assert runtime_env["working_dir"] == str(ROOT)
    pkg = tmp_path / "pkg.zip"
    create_package(str(ROOT), pkg, include_gitignore=False, excludes=runtime_env["excludes"])
    names = zipfile.ZipFile(pkg).namelist()
    assert "training/job.py" in names and "serving/job_launcher.py" in names
    assert "exporters/data/sample_pairs.jsonl" in names
    top = {n.split("/")[0] for n in names}
    assert not top & {".venv", "var", ".git", "tests", "deploy", ".pytest_cache"}, top
    assert not [n for n in names if n.endswith((".onnx", ".pyc", ".db")) or n.startswith("benchmarks/results/")]
    assert pkg.stat().st_size < 2_000_000


def test_a_home_inside_the_checkout_is_not_uploaded():
    excludes = submission(Settings(home=ROOT / "my-home"), "train-x-1")["runtime_env"]["excludes"]
    assert "/my-home" in excludes
    assert job_launcher.UPLOAD_EXCLUDES == excludes[:-1]
