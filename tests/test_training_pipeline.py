"""End to end on a small slice of SciFact train: real training, real export, real registry."""
from __future__ import annotations

import json
import os

import pytest

from scoring.scorer import VersionScorer
from state.registry import Registry
from state.settings import Settings
from training.config import TrainConfig
from training.pipeline import DataSpec, run

from tests.conftest import SCIFACT

pytestmark = pytest.mark.skipif(not SCIFACT.is_dir(), reason="needs ../shared/data/scifact")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# A few dozen pairs: 16 queries x (1 positive + 1 hard + 1 random negative), short sequences.
TINY = dict(max_queries=16, epochs=1, batch_size=8, max_length=96, negatives_per_query=1, random_negatives=1,
            eval_k=10, dev_fraction=0.25, threads=2,
            # ms/pair depends on how loaded the shared CPU is; the gate is still computed and reported
            # (absolute limit only: no base model is built in these tests' fresh homes)
            max_ms_per_pair=1e6, max_ms_ratio_to_base=None)


class Recorder:
    def __init__(self):
        self.stages, self.fields, self.steps = [], {}, []

    def stage(self, name):
        self.stages.append(name)

    def progress(self, done, total):
        self.steps.append((done, total))

    def update(self, **fields):
        self.fields.update(fields)


def test_default_recipe_trains_exports_and_publishes(tmp_path):
    settings = Settings(home=tmp_path)
    reg = Registry(settings.registry_root)
    rec = Recorder()
    # min_gain -1: this checks the machinery (train -> export -> gates -> publish), not quality,
    # which 12 training queries cannot show; the quality gate itself is tested below.
    cfg = TrainConfig(min_gain=-1.0, **TINY)  # auto: bi-encoder base -> fine-tuned bi-encoder
    out = run("scifact", DataSpec(beir=str(SCIFACT)), cfg, settings, activate=True, reporter=rec)
    assert out["model_id"] == "scifact@v1" and reg.active_version("scifact") == "v1"
    assert rec.stages == ["load", "negatives", "train", "evaluate", "export", "gates", "publish"]
    assert any(t > 0 and d == t for d, t in rec.steps)
    man = reg.manifest("scifact", "v1")
    assert man["kind"] == "bi-encoder" and man["parity"]["passed"]
    assert {g["gate"] for g in man["gates"]} == {"quality", "parity", "latency_ms_per_pair", "size_bytes"}
    assert all(g["passed"] for g in man["gates"]) and man["gates"][2]["value"] == round(man["ms_per_pair_256"], 2)
    assert set(man["evaluation"]) >= {"bm25", "base", "candidate"} and "ndcg@10" in man["evaluation"]["candidate"]
    assert man["trained_from"]["sources"]["beir"]["split"] == "train"
    reg.verify("scifact", "v1")
    scored = VersionScorer(reg.version_dir("scifact", "v1")).score(
        "aspirin lowers heart attack risk", ["Aspirin reduced myocardial infarction.", "Bone density in mice."])
    assert scored.scores.shape == (2,) and ((scored.scores > 0) & (scored.scores < 1)).all()
    assert not (tmp_path / "models" / "scifact" / ".staging").exists()  # no empty leftovers either


def test_gate_that_cannot_pass_publishes_nothing_and_names_the_gate(tmp_path, monkeypatch):
    """Through `reranker train --json`: exit 2, one JSON object on stdout naming the failed gate."""
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.setenv("RERANKER_HOME", str(tmp_path))
    cfg = {**TINY, "max_queries": 8, "min_gain": 5.0}  # NDCG can never gain 5
    res = CliRunner().invoke(app, ["train", "--domain", "scifact", "--beir", str(SCIFACT), "--json",
                                   "--config", json.dumps(cfg)])
    assert res.exit_code == 2, res.output
    out = json.loads(res.stdout)  # the trainer's own log lines must not reach stdout
    assert out["published"] is False and "gate quality failed" in out["error"]
    assert [g["gate"] for g in out["gates"] if not g["passed"]] == ["quality"]
    reg = Registry(tmp_path / "models")
    assert not reg.exists("scifact") or not reg.config("scifact")["versions"]
    staging = tmp_path / "models" / "scifact" / ".staging"
    assert not staging.exists() or not list(staging.iterdir())
