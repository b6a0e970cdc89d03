"""Soak: locust at ~80% of the measured saturation for 30 min, a promote every 90 s, one pool replica
killed, the database stopped for 20 s and started again, then a graceful stop (SIGTERM). Reports 5xx,
p50/p99, the longest stretch without an answer around the kill, and impressions answered vs stored
(what the database restart lost: the goal is nothing, with no command run). Results in results/soak.json.

    nice -n 10 .venv/bin/python -m benchmarks.soak                     # 30 min
    .venv/bin/python -m benchmarks.soak --minutes 3 --saturation-s 30  # a short run

It runs its own service (`python -m serving.main`, what `make serve` runs, on a free loopback port with a
private local Ray and a fresh RERANKER_HOME; BENCH_BASE_DIR reuses an exported base model): saturation is measured first
(locust users with no pause), then the soak runs at `--load` (0.8) of it with a fixed rate per user.
One domain has a published cross-encoder (benchmarks.latency's export) whose two versions are
promoted in turn; a second domain stays on the base model. The event store is a PostgreSQL server of the
run's own (serving.local.LocalPostgres; `--db-down-s 0`, or no PostgreSQL installed: SQLite, no restart).
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks import service as svc
from benchmarks.load import read_stats, run_locust
from benchmarks.results_io import RESULTS, save


class Probe:
    """One small request every `every` s: when answers stopped and resumed around a replica kill."""

    def __init__(self, url: str, domain: str, every: float = 0.25):
        self.url, self.domain, self.every = url, domain, every
        self.seen: list[tuple[float, int | None]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        body = {"query": "probe", "documents": ["a short passage", "another one"]}
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                status = httpx.post(f"{self.url}/rerank", params={"domain": self.domain}, json=body,
                                    timeout=60).status_code
            except httpx.HTTPError:
                status = None
            self.seen.append((t, status))
            self.stop.wait(self.every)

    def count(self, status: int | None) -> int:
        return sum(1 for _, s in self.seen if s == status)

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time between two answered (200) probes sent in [start - 5 s, end]."""
        times = [t for t, s in self.seen if s == 200 and start - 5 <= t <= end]
        return max((b - a for a, b in zip(times, times[1:])), default=float("nan"))


def failures_by_status(csv_prefix: Path) -> dict[str, int]:
    """locust's failures CSV, counted by the HTTP status our locustfile puts first ("503: ...")."""
    out: dict[str, int] = {}
    path = Path(f"{csv_prefix}_failures.csv")
    if not path.is_file():
        return out
    for row in csv.DictReader(open(path)):
        m = re.search(r"\b(\d{3}): ", row["Error"])  # locust wraps it: CatchResponseError('503: ...')
        key = m.group(1) if m else row["Error"][:60]
        out[key] = out.get(key, 0) + int(row["Occurrences"])
    return out


def loadavg_sampler(samples: list, stop: threading.Event, every: float = 30) -> threading.Thread:
    def loop() -> None:
        while not stop.wait(every):
            samples.append(os.getloadavg()[0])
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--load", type=float, default=0.8, help="share of the measured saturation")
    ap.add_argument("--saturation-s", type=int, default=90, help="seconds of the saturation measurement")
    ap.add_argument("--users", type=int, default=8, help="locust users of the soak (each at a fixed rate)")
    ap.add_argument("--saturation-users", type=int, default=4,
                    help="users with no pause that measure saturation: 2 per pool replica keeps each one busy")
    ap.add_argument("--promote-every", type=float, default=90)
    ap.add_argument("--kill-at", type=float, default=0.4, help="kill a pool replica at this share of the soak")
    ap.add_argument("--db-restart-at", type=float, default=0.6, help="stop the database at this share of the soak")
    ap.add_argument("--db-down-s", type=float, default=20, help="for this long (0: SQLite, no restart)")
    ap.add_argument("--domain", default="scifact")
    ap.add_argument("--base-domain", default="legal")
    args = svc.own_service_args(ap, RESULTS / "soak.json", argv)
    from benchmarks.latency import ensure_models
    from serving import local
    from state import spill
    from state.store import Store

    _, version_dir = ensure_models(args.cache)
    home = svc.fresh_home("reranker-soak-home-")
    token = os.environ.get("RERANKER_ADMIN_TOKEN", svc.ADMIN_TOKEN)
    pg, db_url = None, f"sqlite:///{home / 'reranker.db'}"
    if args.db_down_s > 0:
        try:
            pg = local.LocalPostgres(svc.free_port(), db="soak")
            db_url = pg.start()
        except (RuntimeError, OSError) as e:
            print(f"no PostgreSQL ({e}): SQLite, no database restart", flush=True)
            pg = None
    proc = local.start_runner(home, args.port, env={"RERANKER_ADMIN_TOKEN": token, "RERANKER_DB_URL": db_url})
    url = f"http://127.0.0.1:{args.port}"
    domains = [args.domain, args.base_domain]
    load_samples: list[float] = [os.getloadavg()[0]]
    stop_sampling = threading.Event()
    loadavg_sampler(load_samples, stop_sampling)
    result: dict = {"loadavg_start": os.getloadavg(), "cpus": os.cpu_count(), "home": str(home),
                    "db": "postgresql" if pg else "sqlite", "db_restart": None}
    try:
        local.wait_ready(url, timeout_s=900, proc=proc)
        versions = [svc.publish(url, args.domain, version_dir, activate=True),
                    svc.publish(url, args.domain, version_dir, activate=False)]
        print(f"service up on {url}; {args.domain} versions {versions}", flush=True)
        tmp = Path(tempfile.mkdtemp(prefix="locust-soak-"))
        env = {"BENCH_DOMAINS": ",".join(domains)}

        # 1. saturation: users that never pause
        proc_sat = run_locust(url, args.saturation_users, args.saturation_s, tmp / "saturation",
                              {**env, "BENCH_RPS_PER_USER": "max"})
        proc_sat.wait(timeout=args.saturation_s + 300)
        sat = read_stats(tmp / "saturation")
        # answered requests per second: under overload the rest are 503s, which are not throughput
        saturation_rps = (sat["/rerank"]["requests"] - sat["/rerank"]["failures"]) / args.saturation_s
        target = args.load * saturation_rps
        print(f"saturation {saturation_rps:.2f} rps (p50 {sat['/rerank']['p50_ms']} ms); soak at {target:.2f} rps",
              flush=True)
        time.sleep(5)  # let the queue empty

        # 2. the soak: fixed rate, promotes, one replica kill
        seconds = int(args.minutes * 60)
        probe = Probe(url, args.base_domain)
        probe.thread.start()
        locust = run_locust(url, args.users, seconds, tmp / "soak",
                            {**env, "BENCH_RPS_PER_USER": f"{target / args.users:.4f}"})
        t0 = time.monotonic()
        promotes, kill = [], None
        next_promote, kill_at = t0 + args.promote_every, t0 + args.kill_at * seconds
        db_stop_at = t0 + args.db_restart_at * seconds if pg else float("inf")
        while locust.poll() is None and time.monotonic() < t0 + seconds + 300:
            now = time.monotonic()
            if now >= next_promote and now < t0 + seconds - 10:
                version = versions[1 - len(promotes) % 2]  # v2, v1, v2, ...
                try:
                    svc.promote(url, args.domain, version)
                    promotes.append({"at_s": round(now - t0, 1), "version": version, "ok": True})
                except httpx.HTTPError as e:
                    promotes.append({"at_s": round(now - t0, 1), "version": version, "ok": False, "error": str(e)})
                next_promote += args.promote_every
            if kill is None and now >= kill_at:
                pids = local.replica_pids(proc.pid, "RerankerPool")
                os.kill(pids[0], signal.SIGKILL)
                kill = {"at_s": round(now - t0, 1), "pid": pids[0], "replicas_before": len(pids)}
                print(f"killed pool replica {pids[0]} at {kill['at_s']} s", flush=True)
            if pg and result["db_restart"] is None and now >= db_stop_at:
                pg.stop()
                result["db_restart"] = {"stopped_at_s": round(now - t0, 1)}
                print(f"database stopped at {result['db_restart']['stopped_at_s']} s", flush=True)
            if pg and result["db_restart"] and "started_at_s" not in result["db_restart"] \
                    and now >= db_stop_at + args.db_down_s:
                pg.start()
                result["db_restart"]["started_at_s"] = round(time.monotonic() - t0, 1)
                print(f"database started at {result['db_restart']['started_at_s']} s", flush=True)
            if kill is not None and "replaced_after_s" not in kill:
                if len(set(local.replica_pids(proc.pid, "RerankerPool")) - {kill["pid"]}) >= kill["replicas_before"]:
                    kill["replaced_after_s"] = round(time.monotonic() - t0 - kill["at_s"], 1)
            time.sleep(0.5)
        locust.wait(timeout=300)
        probe.stop.set()
        probe.thread.join(timeout=120)
        stats = read_stats(tmp / "soak")
        by_status = failures_by_status(tmp / "soak")
        if kill is not None:
            k = t0 + kill["at_s"]
            kill["longest_gap_between_answers_s"] = round(probe.longest_gap(k, k + 60), 2)
            kill["probe_failures_within_60_s"] = sum(1 for t, s in probe.seen if k <= t <= k + 60 and s != 200)
        rerank = stats.get("/rerank", {})
        result.update({"answered_by_locust": rerank.get("requests", 0) - rerank.get("failures", 0),
                       "saturation": {"users": args.saturation_users, "seconds": args.saturation_s,
                                      "answered_rps": saturation_rps, "stats": sat},
                       "target_rps": target, "soak": {"minutes": args.minutes, "users": args.users, "stats": stats},
                       "failures_by_status": by_status,
                       "5xx": sum(n for code, n in by_status.items() if code.startswith("5")),
                       "promotes": promotes, "kill": kill,
                       "probe": {"sent": len(probe.seen), "answered": probe.count(200), "503": probe.count(503),
                                 "500": probe.count(500), "transport_errors": probe.count(None)}})
    finally:
        # 3. graceful stop: every impression of an answered request must be in the store afterwards
        t_stop = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                result["exit_code"] = proc.wait(timeout=300)
            except Exception:  # noqa: BLE001
                proc.kill()
        result["stop_s"] = round(time.monotonic() - t_stop, 1)
        stop_sampling.set()
    if pg and result["db_restart"] and "started_at_s" not in result["db_restart"]:
        pg.start()  # the soak ended while it was down: what stays in the spill file shows below
    store = Store(db_url)
    try:
        stored = {d: store.count_impressions(d) for d in domains}
    finally:
        store.close()
        if pg:
            pg.remove()
    sat_stats = result.get("saturation", {}).get("stats", {}).get("/rerank", {})
    by_saturation = sat_stats.get("requests", 0) - sat_stats.get("failures", 0)
    by_locust, by_probe = result.get("answered_by_locust") or 0, result.get("probe", {}).get("answered", 0)
    result["impressions"] = {"answered_by_saturation_run": by_saturation, "answered_by_locust": by_locust,
                             "answered_by_probe": by_probe, "answered": by_saturation + by_locust + by_probe,
                             "stored": sum(stored.values()), "stored_by_domain": stored,
                             # spilled during the outage and not replayed before the stop (goal: 0)
                             "spill_backlog_after_stop": spill.backlog(home / "events-failed.jsonl")}
    result["impressions"]["lost"] = result["impressions"]["answered"] - result["impressions"]["stored"]
    result["loadavg"] = {"start": load_samples[0], "median": statistics.median(load_samples),
                         "max": max(load_samples), "end": os.getloadavg()[0]}
    r = result["soak"]["stats"].get("/rerank", {})
    print(f"soak {args.minutes} min at {target:.2f} rps ({args.load:.0%} of {saturation_rps:.2f}): "
          f"{r.get('requests')} reranks, 5xx {result['5xx']} ({result['failures_by_status']}), "
          f"p50 {r.get('p50_ms')} ms p99 {r.get('p99_ms')} ms; {len(promotes)} promotes; kill {kill}; "
          f"db restart {result['db_restart']}; impressions answered {result['impressions']['answered']} vs stored "
          f"{result['impressions']['stored']} (spill backlog {result['impressions']['spill_backlog_after_stop']}); "
          f"load average median {result['loadavg']['median']:.1f} max {result['loadavg']['max']:.1f}")
    return save(args.out, result)


if __name__ == "__main__":
    main()
