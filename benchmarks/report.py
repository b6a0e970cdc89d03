"""Markdown tables from benchmarks/results/*.json (for the README's Performance section).

    .venv/bin/python -m benchmarks.report
"""
from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _load(name: str) -> dict | None:
    p = RESULTS / name
    return json.loads(p.read_text()) if p.is_file() else None


def latency(d: dict) -> list[str]:
    m = d["machine"]
    ov = any("openvino_wall_ms_per_pair" in c for c in d["cells"])
    out = [f"Latency, ms per (query, passage) pair, medians of {d['rounds']} interleaved runs "
           f"({m['cpu']}, {m['cores']} cores, {'/'.join(m['isa'])}; load avg {m['loadavg_start'][0]:.1f} at start):", "",
           "| tokens | batch | threads | torch fp32 | onnxruntime int8 | ratio |"
           + (" OpenVINO int8 | ratio |" if ov else ""),
           "| ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if ov else "")]

    def row(label: str, c: dict) -> str:
        r = (f"| {label} | {c['batch']} | {c['threads']} | {c['torch_wall_ms_per_pair']:.1f} | "
             f"{c['onnx_wall_ms_per_pair']:.1f} | {c['ratio_wall']:.2f} |")
        if ov:
            r += (f" {c['openvino_wall_ms_per_pair']:.1f} | {c['ratio_wall_openvino']:.2f} |"
                  if "openvino_wall_ms_per_pair" in c else " - | - |")
        return r

    out += [row(str(c["tokens"]), c) for c in d["cells"]]
    out += [row(f"SciFact natural (mean {s['mean_tokens']:.0f})", s) for s in d["scifact"]]
    out += ["", "Wall-clock medians; `ratio` = torch / engine. CPU-time ratios are in results/latency.json."]
    return out


def service(load: dict | None, hot: dict | None, over: dict | None) -> list[str]:
    out = ["", "| benchmark | figure |", "| --- | --- |"]
    if load:
        r = load["stats"].get("/rerank", {})
        out.append(f"| load: {load['users']} users, {load['seconds']} s, 20-50 SciFact passages | "
                   f"{r.get('rps', 0):.2f} rps, p50 {r.get('p50_ms')} / p95 {r.get('p95_ms')} / p99 {r.get('p99_ms')} ms, "
                   f"{load['stats'].get('Aggregated', {}).get('failures')} failures of "
                   f"{load['stats'].get('Aggregated', {}).get('requests')} |")
    if hot:
        t = hot["promote_to_first_new_response_s"]
        out.append(f"| hot swap: {len(hot['swaps'])} publish+promote under {hot['users']}-user load | "
                   f"{hot['failed_requests']} failed of {hot['requests']} requests; promote -> first new response "
                   f"median {t['median']:.2f} s, max {t['max']:.2f} s |" if t["median"] is not None else "| hot swap | no swap seen |")
    if over:
        for name, c in over["cases"].items():
            out.append(f"| overhead, {name} | in-process {c['in_process_ms']:.1f} ms, HTTP + Serve {c['http_ms']:.1f} ms, "
                       f"added {c['added_ms']:.1f} ms |")
    return out


def main() -> None:
    lines: list[str] = []
    if (d := _load("latency.json")):
        lines += latency(d)
    lines += service(_load("load.json"), _load("hotswap.json"), _load("overhead.json"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
