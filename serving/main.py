"""`python -m serving.main [serve_config.yaml]`: what `make serve` runs.

Deploys the config file as `serve run` does (the whole file: http options, proxy location, every
application and its per-deployment overrides), then stops gracefully on SIGTERM (systemd, Docker,
Kubernetes) or SIGINT (Ctrl-C): the ingress answers new requests 503 + Retry-After while the ones in
flight finish (at most RERANKER_DRAIN_GRACE_S) and for RERANKER_DRAIN_LINGER_S after, then Serve
shuts down and the impression loggers flush (serving/drain.py). A second signal skips the wait. `serve run serve_config.yaml` still works,
without the drain: Ray's CLI aborts on SIGTERM and cuts requests in flight on SIGINT.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import yaml

log = logging.getLogger("reranker.main")


def _deploy(config_path: Path, dashboard: bool):
    """Ray + Serve + the config, the way `serve run CONFIG` does it (ray/serve/scripts.py); returns
    the parsed config. Serve has no public call that deploys a config file, hence `_private_api`."""
    import ray
    from ray.serve._private import api as _private_api
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load(config_path.read_text()))
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), namespace="serve",
                 include_dashboard=None if dashboard else False)
    return config, _private_api.serve_start(
        http_options=config.http_options.model_dump(), proxy_location=config.proxy_location,
        grpc_options=gRPCOptions(**config.grpc_options.model_dump()), controller_options=config.controller_options)


def _running_ingresses(app_name: str) -> int:
    """RUNNING replicas of the app's ingress deployment (the one HTTP reaches)."""
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None:
        return 0
    ingress = app.deployments.get("Ingress")
    return 0 if ingress is None else int(ingress.replica_states.get("RUNNING", 0))


def drain(switches: dict, grace_s: float, interrupted: threading.Event) -> bool:
    """Flip every app's switch and wait until each running ingress reported its requests done, at most
    grace_s (or until `interrupted`). True when everything in flight finished."""
    import ray

    ray.get([s.drain.remote() for s in switches.values()])
    expected = {name: _running_ingresses(name) for name in switches}
    deadline = time.monotonic() + grace_s
    while True:
        status = {name: ray.get(s.status.remote()) for name, s in switches.items()}
        # done when every running ingress reported, or every one that ever registered did
        if all(done >= min(expected[n], registered) for n, (registered, done) in status.items()):
            return True
        if time.monotonic() >= deadline or interrupted.is_set():
            log.warning("drain: grace period over with requests still in flight (%s)", status)
            return False
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", nargs="?", default="serve_config.yaml", type=Path)
    ap.add_argument("--no-dashboard", action="store_true", help="start the local Ray without its dashboard")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from ray import serve

    from serving import drain as draining
    from state.settings import Settings

    settings = Settings()
    stop, second = threading.Event(), threading.Event()

    def on_signal(signum: int, _frame) -> None:
        (second if stop.is_set() else stop).set()
        log.info("%s: %s", signal.Signals(signum).name,
                 "stopping now" if second.is_set() else f"draining (up to {settings.drain_grace_s:g} s)")

    config, client = _deploy(args.config, dashboard=not args.no_dashboard)
    # after ray.init, which installs its own SIGTERM handler (an abort)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    switches = {app.name: draining.create_switch(app.name) for app in config.applications}
    client.deploy_apps(config, _blocking=False)
    log.info("deployed %s; stop with SIGTERM or SIGINT", ", ".join(switches))
    shown = None
    while not stop.wait(2):
        state = {name: str(a.status) for name, a in serve.status().applications.items()}
        if state != shown:
            log.info("applications: %s", state)
            shown = state
    t0 = time.monotonic()
    finished = drain(switches, settings.drain_grace_s, second)
    log.info("drained in %.1f s (%s); refusing new requests for %g s more, then shutting Serve down",
             time.monotonic() - t0, "every request in flight answered" if finished else "grace period over",
             settings.drain_linger_s)
    # a client answered at the end of the drain and asking again at once gets a 503 + Retry-After (its
    # cue to go elsewhere) instead of a connection cut by the shutdown
    second.wait(settings.drain_linger_s)
    serve.shutdown()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
