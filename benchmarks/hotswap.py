"""Hot swap under load: while locust runs, publish and promote a new version of one domain ten times.

Reports locust's failed requests over the whole run (target 0) and, per swap, the time from the
promote call to the first response served by the new version (target <= 2 s).

    .venv/bin/python -m benchmarks.hotswap                   # starts the service on 127.0.0.1:8123
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks import service as svc
from benchmarks.load import prepare_domains, read_stats, run_locust
from benchmarks.results_io import RESULTS, save


def first_new_response(url: str, domain: str, model_id: str, user: str, timeout_s: float) -> float | None:
    """Seconds until a probe request (domain arm) is answered by model_id; None if not within timeout_s."""
    t0 = time.perf_counter()
    body = {"query": "probe", "documents": ["a short passage", "another one"], "user_id": user}
    while time.perf_counter() - t0 < timeout_s:
        r = httpx.post(f"{url}/rerank", params={"domain": domain}, json=body, timeout=30)
        if r.status_code == 200 and r.json().get("model") == model_id:
            return time.perf_counter() - t0
        time.sleep(0.05)
    return None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running service on 127.0.0.1; default: start one")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--domain", default="scifact")
    ap.add_argument("--base-domain", default="legal", help="a second domain under load that stays on the base")
    ap.add_argument("--swaps", type=int, default=10)
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--time", type=int, default=240, help="seconds of locust load (swaps happen inside it)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "reranker-bench-latency")
    ap.add_argument("--out", type=Path, default=RESULTS / "hotswap.json")
    args = ap.parse_args(argv)
    from benchmarks.latency import ensure_models

    _, version_dir = ensure_models(args.cache)
    domains = [args.domain, args.base_domain]
    swaps = []
    with svc.service(args.url, args.port) as url:
        prepare_domains(url, domains, version_dir)  # args.domain gets an active version, the other stays base
        user = svc.domain_user(args.domain)
        prefix = Path(tempfile.mkdtemp(prefix="locust-")) / "hotswap"
        proc = run_locust(url, args.users, args.time, prefix, {"BENCH_DOMAINS": ",".join(domains)})
        time.sleep(min(10, args.time / 10))  # let the load reach steady state first
        deadline = time.time() + args.time - 5
        for i in range(args.swaps):
            if time.time() > deadline:
                print(f"stopped after {i} swaps: the load window ended", flush=True)
                break
            t0 = time.perf_counter()
            version = svc.publish(url, args.domain, version_dir, activate=False)
            t1 = time.perf_counter()
            svc.promote(url, args.domain, version)
            t2 = time.perf_counter()
            seen = first_new_response(url, args.domain, f"{args.domain}@{version}", user, timeout_s=30)
            swaps.append({"version": version, "publish_s": t1 - t0, "promote_call_s": t2 - t1,
                          "promote_to_first_new_response_s": None if seen is None else (t2 - t1) + seen})
            print(f"swap {i + 1}: {args.domain}@{version} publish {t1 - t0:.2f} s, promote call {t2 - t1:.2f} s,"
                  f" first new response {swaps[-1]['promote_to_first_new_response_s']} s after promote", flush=True)
        proc.wait(timeout=args.time + 120)
        stats = read_stats(prefix)
    times = [s["promote_to_first_new_response_s"] for s in swaps if s["promote_to_first_new_response_s"] is not None]
    agg = stats.get("Aggregated", {})
    result = {"swaps": swaps, "users": args.users, "seconds": args.time, "stats": stats,
              "failed_requests": agg.get("failures"), "requests": agg.get("requests"),
              "never_seen": sum(1 for s in swaps if s["promote_to_first_new_response_s"] is None),
              "promote_to_first_new_response_s": {"median": statistics.median(times) if times else None,
                                                  "max": max(times) if times else None},
              "loadavg_end": os.getloadavg()}
    print(f"{len(swaps)} swaps under load: {result['failed_requests']} failed of {result['requests']} requests;"
          f" promote -> first new response median {result['promote_to_first_new_response_s']['median']}"
          f" max {result['promote_to_first_new_response_s']['max']} s")
    return save(args.out, result)


if __name__ == "__main__":
    main()
