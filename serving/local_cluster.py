"""A two-node Ray cluster on this machine, started the way the README's "Running on a Ray cluster" says:
`ray start --head`, `ray start --address`, then `serve deploy`. The cluster test and the autoscaling
benchmark run on it.

Each node is its own raylet with its own CPU count and custom resources, so Ray's placement is real.
Every port is a free one picked at start, never Ray's defaults, because other Ray instances share the
machine. The cluster uses Ray's token authentication with a token of its own.

`stop()` ends this cluster's processes and nothing else. `ray stop` would end every Ray process on the
machine. Each process started here carries a marker in its environment, and Ray passes that environment
on to the workers a raylet starts, so the marker finds them all.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

MARKER = "RERANKER_LOCAL_CLUSTER"
ROOT = Path(__file__).resolve().parent.parent
CLUSTER_CONFIG = ROOT / "deploy" / "serve_cluster.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    """A console script of this environment (ray, serve), beside the running interpreter."""
    return str(Path(sys.executable).parent / name)


def _node_ports() -> list[str]:
    """Ports every node binds. Left unset, some default to fixed numbers (the dashboard agent's
    52365), and two nodes on one machine would collide."""
    return [f"--{flag}={free_port()}" for flag in ("node-manager-port", "object-manager-port",
            "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
            "metrics-export-port")]


@dataclass
class LocalCluster:
    head_cpus: int = 0  # the head runs the Serve controller, the HTTP proxy and the ingress: all 0-CPU
    worker_cpus: int = 2
    head_resources: dict[str, float] = field(default_factory=lambda: {"reranker_ingress": 1})
    worker_resources: dict[str, float] = field(default_factory=lambda: {"reranker_pool": 4})
    env: dict[str, str] = field(default_factory=dict)  # for every node, so for every replica and task
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rrk-", dir="/tmp")))
    gcs_port: int = 0
    dashboard_port: int = 0
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    marker: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def cli_env(self) -> dict[str, str]:
        """Environment of the ray/serve commands: this cluster's token and marker. Nothing of the caller's
        Ray (RAY_ADDRESS, its auth mode) or settings (RERANKER_*) leaks in: the nodes get `env` only."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RERANKER_"))}
        # this environment first on PATH, as on a node where it is installed: Ray Jobs entrypoints say `python`
        path = os.pathsep.join([str(Path(sys.executable).parent), inherited.get("PATH", "")])
        return {**inherited, "PATH": path, **self.env, MARKER: self.marker, "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": self.token, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}

    def _ray(self, *args: str, timeout: float = 180) -> str:
        # the environment holds the token: never print it; the output says what failed
        out = subprocess.run([_bin("ray"), *args], env=self.cli_env(), capture_output=True, text=True,
                             timeout=timeout, cwd=self.temp_dir)
        if out.returncode != 0:
            raise RuntimeError(f"ray {args[0]} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        return out.stdout

    def start(self, attempts: int = 2) -> LocalCluster:
        """Start the head, then the worker, and wait until both are alive. A free port can be taken by
        another process before Ray binds it: a failed start is stopped and tried again on new ports."""
        for attempt in range(1, attempts + 1):
            try:
                self._start_nodes()
                return self
            except Exception:
                self.stop()
                if attempt == attempts:
                    raise
            except BaseException:  # interrupted: stop what started, do not retry
                self.stop()
                raise
        return self

    def _start_nodes(self) -> None:
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self._ray("start", "--head", f"--port={self.gcs_port}", "--include-dashboard=true",
                  "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                  f"--ray-client-server-port={free_port()}", f"--num-cpus={self.head_cpus}",
                  f"--resources={json.dumps(self.head_resources)}", f"--temp-dir={self.temp_dir}",
                  "--disable-usage-stats", *_node_ports())
        self._ray("start", f"--address={self.gcs_address}", f"--num-cpus={self.worker_cpus}",
                  f"--resources={json.dumps(self.worker_resources)}", f"--temp-dir={self.temp_dir}",
                  "--disable-usage-stats", *_node_ports())
        self._wait(lambda: len(self.nodes()) == 2, "both nodes alive", 120)

    # ---- the cluster's own view (Ray's state API on the dashboard) ---------------------------------
    def api(self, path: str, **params: Any) -> Any:
        r = httpx.get(f"{self.dashboard_url}{path}", params=params, timeout=30,
                      headers={"Authorization": f"Bearer {self.token}"})
        r.raise_for_status()
        return r.json()

    def _state(self, kind: str, **filters: str) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": 1000, "detail": "true"}
        if filters:
            params.update(filter_keys=list(filters), filter_predicates=["="] * len(filters),
                          filter_values=list(filters.values()))
        return self.api(f"/api/v0/{kind}", **params)["data"]["result"]["result"]

    def nodes(self) -> list[dict[str, Any]]:
        """Alive nodes, each with `node_id` and `resources_total`."""
        return self._state("nodes", state="ALIVE")

    def node_with(self, resource: str) -> str:
        """The id of the node started with this custom resource."""
        return next(n["node_id"] for n in self.nodes() if resource in n["resources_total"])

    def actors(self, class_name: str) -> list[dict[str, Any]]:
        """Alive actors whose class name contains `class_name` (Serve names replica classes
        ServeReplica:<app>:<deployment>)."""
        return [a for a in self._state("actors", state="ALIVE") if class_name in a["class_name"]]

    def tasks(self, name: str) -> list[dict[str, Any]]:
        return self._state("tasks", name=name)

    # ---- Serve ------------------------------------------------------------------------------------
    def serve_deploy(self, config: Path) -> None:
        out = subprocess.run([_bin("serve"), "deploy", str(config), "--address", self.dashboard_url],
                             env=self.cli_env(), capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"serve deploy failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")

    def serve_status(self) -> dict[str, Any]:
        out = subprocess.run([_bin("serve"), "status", "--address", self.dashboard_url], env=self.cli_env(),
                             capture_output=True, text=True, timeout=60)
        return yaml.safe_load(out.stdout) or {}

    def replicas(self, deployment: str) -> int:
        """RUNNING replicas of a deployment, as Serve's controller counts them."""
        for app in self.serve_status().get("applications", {}).values():
            dep = app.get("deployments", {}).get(deployment)
            if dep:
                return int(dep.get("replica_states", {}).get("RUNNING", 0))
        return 0

    # ---- stop -------------------------------------------------------------------------------------
    def processes(self) -> list[Any]:
        """This cluster's processes, and their children. A process belongs here if its environment carries
        the marker, or its command line or open files name the temp dir. Any one test can miss: Ray's
        agents rename themselves (setproctitle), which can overwrite the environment that /proc shows.
        All Ray processes log into the temp dir."""
        import psutil

        me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
        tmp = str(self.temp_dir)
        inside = tmp + os.sep

        def ours(p: Any) -> bool:
            if p.environ().get(MARKER) == self.marker or any(inside in a or a.endswith(tmp) for a in p.cmdline()):
                return True
            return any(f.path.startswith(inside) for f in p.open_files())

        found: dict[int, Any] = {}
        for p in psutil.process_iter():
            try:
                if p.pid not in me and p.pid not in found and ours(p):
                    found.update({q.pid: q for q in [p, *p.children(recursive=True)]})
            except (psutil.Error, OSError):
                continue
        return [p for pid, p in found.items() if pid not in me]

    def stop(self, grace_s: float = 5) -> int:
        """SIGTERM this cluster's processes, SIGKILL what is left after `grace_s` (Ray's agents ignore
        SIGTERM once their raylet is gone), and look again for any started meanwhile; returns how many."""
        import psutil

        total = 0
        for _ in range(3):
            procs = self.processes()
            if not procs:
                break
            total += len(procs)
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    p.terminate()
            _, alive = psutil.wait_procs(procs, timeout=grace_s)
            for p in alive:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            psutil.wait_procs(alive, timeout=5)
        return total

    def remove_files(self) -> None:
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    @staticmethod
    def _wait(check, what: str, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                if check():
                    return
            except (httpx.HTTPError, RuntimeError, KeyError, StopIteration):
                pass
            time.sleep(1)
        raise TimeoutError(f"local cluster: not {what} after {timeout_s} s")


def cluster_config(port: int, env_vars: dict[str, str], source: Path = CLUSTER_CONFIG) -> dict[str, Any]:
    """deploy/serve_cluster.yaml with this machine's values: HTTP on 127.0.0.1:port, and `env_vars`
    (home, database, ...) in place of the file's examples. Placement and autoscaling stay as shipped."""
    cfg = yaml.safe_load(source.read_text())
    cfg["http_options"] = {**cfg.get("http_options", {}), "host": "127.0.0.1", "port": port}
    for app in cfg["applications"]:
        runtime_env = app.setdefault("runtime_env", {})
        runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env_vars}
    return cfg


if __name__ == "__main__":
    # `python -m serving.local_cluster stop /tmp/rrk-XXXX`: end what a killed test or benchmark left running
    if len(sys.argv) != 3 or sys.argv[1] != "stop":
        raise SystemExit("usage: python -m serving.local_cluster stop TEMP_DIR")
    cluster = LocalCluster(temp_dir=Path(sys.argv[2]).resolve())
    print(f"stopped {cluster.stop()} processes")
    cluster.remove_files()
