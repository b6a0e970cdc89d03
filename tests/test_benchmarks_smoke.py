"""The latency benchmark still runs end to end at tiny sizes. No timing assertions: only shape and sign."""
from __future__ import annotations

import json

from benchmarks import latency


def test_latency_script_writes_every_cell(tmp_path):
    out = tmp_path / "latency.json"
    latency.main(["--tokens", "32,64", "--batches", "1,2", "--threads", "1", "--rounds", "1",
                  "--scifact-queries", "1", "--scifact-passages", "3",
                  "--cache", str(tmp_path / "cache"), "--out", str(out)])
    data = json.loads(out.read_text())
    cells = {(c["tokens"], c["batch"], c["threads"]) for c in data["cells"]}
    assert cells == {(t, b, 1) for t in (32, 64) for b in (1, 2)}
    for c in data["cells"] + data["scifact"]:
        for key in ("torch_wall_ms_per_pair", "onnx_wall_ms_per_pair", "ratio_wall", "ratio_cpu"):
            assert c[key] > 0, (key, c)
    assert data["scifact"][0]["pairs"] == 3
    assert data["onnx_manifest"]["parity"]["passed"]
