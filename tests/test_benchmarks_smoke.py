"""The benchmark scripts still run end to end at tiny sizes. No timing assertions: only shape, counts and
correctness (no failed request, the swapped-in version is the one answering)."""
from __future__ import annotations

import json

import pytest

from benchmarks import hotswap, latency, load, overhead
from tests.conftest import SCIFACT

# every script here builds its requests from SciFact (benchmarks/data.py), like the other modules that read it
pytestmark = pytest.mark.skipif(not SCIFACT.is_dir(), reason="needs ../shared/data/scifact")


@pytest.fixture(scope="module")
def bench_cache(tmp_path_factory):
    """One cross-encoder + ONNX export shared by every benchmark here (latency.ensure_models builds it)."""
    return tmp_path_factory.mktemp("bench-cache")


def test_latency_script_writes_every_cell(tmp_path, bench_cache):
    out = tmp_path / "latency.json"
    latency.main(["--tokens", "32,64", "--batches", "1,2", "--threads", "1", "--rounds", "1",
                  "--scifact-queries", "1", "--scifact-passages", "3",
                  "--cache", str(bench_cache), "--out", str(out)])
    data = json.loads(out.read_text())
    cells = {(c["tokens"], c["batch"], c["threads"]) for c in data["cells"]}
    assert cells == {(t, b, 1) for t in (32, 64) for b in (1, 2)}
    for c in data["cells"] + data["scifact"]:
        for key in ("torch_wall_ms_per_pair", "onnx_wall_ms_per_pair", "openvino_wall_ms_per_pair", "ratio_wall",
                    "ratio_cpu", "ratio_wall_openvino", "ratio_cpu_openvino"):
            assert c[key] > 0, (key, c)
    assert data["scifact"][0]["pairs"] == 3
    # what a figure depends on, to check it on another machine: per-stage times, fed shapes, kernels, host
    for c in data["cells"]:
        assert set(c["stages"]) == {"onnx", "openvino"}, c
        assert all(st["infer"] > 0 and st["tokenize"] > 0 and st["engine_shapes"] for st in c["stages"].values())
        assert all(w % data["width_multiple_openvino"] == 0 or w == c["tokens"]
                   for _, w in c["stages"]["openvino"]["engine_shapes"])
    ov = data["openvino"]["threads_1"]
    assert ov["kernels"] and ov["optimization_capabilities"] and ov["compiled"]["INFERENCE_NUM_THREADS"] == "1"
    assert 0 <= data["machine"]["cpu_shares_during_run"]["busy"] <= 1 and data["machine"]["torch"]["cpu_capability"]
    assert data["onnx_manifest"]["parity"]["passed"] and data["onnx_manifest"]["openvino"]["passed"]


def test_load_script_against_the_running_service(service, bench_cache, tmp_path):
    # with --url the service is used as it is: these domains have no model, so the base answers
    out = tmp_path / "load.json"
    load.main(["--url", service.url, "--users", "1", "--time", "8", "--domains", "bench-load,bench-load-base",
               "--cache", str(bench_cache), "--out", str(out)])
    data = json.loads(out.read_text())
    rerank = data["stats"]["/rerank"]
    assert rerank["requests"] >= 1 and rerank["failures"] == 0
    assert data["stats"]["Aggregated"]["failures"] == 0


def test_hotswap_script_swaps_under_load(service, bench_cache, tmp_path):
    out = tmp_path / "hotswap.json"
    hotswap.main(["--url", service.url, "--domain", "bench-swap", "--base-domain", "bench-swap-base",
                  "--swaps", "1", "--users", "1", "--time", "45", "--cache", str(bench_cache), "--out", str(out)])
    data = json.loads(out.read_text())
    assert len(data["swaps"]) == 1 and data["never_seen"] == 0
    assert data["failed_requests"] == 0 and data["requests"] >= 1
    # the swapped-in version is now the domain's active one
    assert service.registry.active_version("bench-swap") == data["swaps"][0]["version"]


def test_overhead_script_compares_http_with_in_process(service, bench_cache, tmp_path):
    out = tmp_path / "overhead.json"
    overhead.main(["--url", service.url, "--domain", "bench-overhead", "--rounds", "1",
                   "--cache", str(bench_cache), "--out", str(out)])
    data = json.loads(out.read_text())
    assert set(data["cases"]) == {"1 passage", "20 passages"}
    for c in data["cases"].values():
        assert c["in_process_ms"] > 0 and c["http_ms"] > 0
        assert c["added_ms"] == pytest.approx(c["http_ms"] - c["in_process_ms"])


def test_simulation_replays_decide_by_where_each_arm_ranks_the_relevant_passage():
    """benchmarks/simulation.py's seeded replays (no service: the rankings are given): a challenger that
    ranks the relevant passage first is promoted over a champion that ranks it last, the reverse is rejected,
    and the same ranking on both arms is never promoted."""
    from benchmarks.simulation import ClickModel, Sim, replay
    from state.sequential import DecisionRule

    qrels = {f"q{i}": {f"q{i}-rel": 1} for i in range(30)}
    last = {q: [f"{q}-d{j}" for j in range(9)] + [f"{q}-rel"] for q in qrels}
    table = {"last": last, "first": {q: docs[::-1] for q, docs in last.items()}, "base": last}
    sim = Sim(queries={q: q for q in qrels}, qrels=qrels, cands=last, corpus={})
    rule = DecisionRule(min_exposure=100, max_impressions=1500)
    arm_shares = {"domain": 0.45, "challenger": 0.45, "base": 0.1}

    def run(seed: int, champion: str, challenger: str) -> dict:
        return replay(seed, table, champion, challenger, sim, ClickModel(), rule, arm_shares, users=500, look_every=50)

    better, worse = [run(s, "last", "first") for s in range(3)], [run(s, "first", "last") for s in range(3)]
    assert [r["outcome"] for r in better] == ["promote"] * 3 and [r["outcome"] for r in worse] == ["reject"] * 3
    assert all(r["ctr"]["challenger"] > r["ctr"]["domain"] for r in better)
    same = run(0, "last", "last")
    assert same["outcome"] != "promote" and same["challenger_impressions"] >= 100
