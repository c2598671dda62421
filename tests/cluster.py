"""A real Prefect server with process workers on 127.0.0.1, for the scale-out test and benchmark.

Every process is started in its own session (so its id is its process group id) and stopped by
id: the workers' flow-run processes (which Prefect starts in sessions of their own) first, then
the workers, then the server. ``LocalCluster`` is a context manager, so a failing test stops
everything too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """Direct children of a process (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def process_env(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Kill a process started in its own session, and every process group among its descendants."""
    groups = []
    for p in [*descendants(pid), pid]:
        try:
            groups.append(os.getpgid(p))
        except ProcessLookupError:
            continue
    for group in dict.fromkeys(groups):  # descendants' groups first, the process's own last
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)


class LocalCluster:
    """A Prefect server (SQLite, its own PREFECT_HOME) and workers, all stopped by process id on exit."""

    def __init__(self, base: Path, extra_env: dict[str, str] | None = None) -> None:
        self.base = base
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(base / "prefect-home"),
            "PREFECT_API_URL": self.api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            # SQLite waits this long for a lock before giving up; a busy 2-core machine needs more than 10 s.
            "PREFECT_SERVER_DATABASE_TIMEOUT": "60",
            "MOVIEGEN_CHECKOUT": str(ROOT),
            **(extra_env or {}),
        }
        self.env.pop("PREFECT_PROFILES_PATH", None)

    # processes ------------------------------------------------------------------------------

    def start(
        self, name: str, args: list[str], env: dict[str, str] | None = None, cpus: set[int] | None = None
    ) -> subprocess.Popen:
        """Start a process logging to ``<base>/<name>.log``; ``cpus`` pins it and its children to those cores."""
        log = open(self.base / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Affinity is inherited: the worker's flow-run processes and their ffmpeg stay on these cores.
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        kill_tree(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)

    def stop_all(self) -> None:
        for name in [n for n in self.procs if n != "server"] + ["server"]:
            self.stop(name)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_all()

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.base / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    # server, pools, deployments, workers ----------------------------------------------------

    def start_server(self, timeout: float = 180) -> float:
        """Start ``prefect server start`` and wait until it is healthy; return the seconds it took."""
        started = time.monotonic()
        self.start("server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)])
        while time.monotonic() - started < timeout:
            if self.procs["server"].poll() is not None:
                raise RuntimeError("prefect server exited:\n" + self.log("server"))
            try:
                with urllib.request.urlopen(f"{self.api}/health", timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except OSError:
                time.sleep(0.5)
        raise TimeoutError("prefect server not healthy:\n" + self.log("server"))

    def run(
        self, args: list[str], env: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess:
        """Run a command against the server (prefect CLI, moviegen, a script) and wait for it."""
        return subprocess.run(
            args, cwd=ROOT, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout
        )

    def check(self, args: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
        result = self.run(args, env, timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{args} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result.stdout

    def setup_pools(self, *args: str) -> str:
        return self.check([str(BIN / "python"), "deployments/setup.py", *args])

    def deploy(self, env: dict[str, str]) -> str:
        """``prefect deploy`` every deployment of deployments/prefect.yaml, as the docs say."""
        return self.check(
            [str(BIN / "prefect"), "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--all"], env
        )

    def start_worker(
        self, pool: str, name: str, env: dict[str, str] | None = None, limit: int = 1, cpus: set[int] | None = None
    ) -> None:
        args = [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--name", name, "--limit", str(limit)]
        self.start(name, args, env, cpus)

    def wait_workers(self, pool: str, names: list[str], timeout: float = 120) -> None:
        """Wait until the named workers have registered with the pool (their first heartbeat)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            online = {w["name"] for w in self.api_post(f"/work_pools/{pool}/workers/filter", {})}
            if set(names) <= online:
                return
            time.sleep(1)
        raise TimeoutError(f"workers {names} did not come online: " + " ".join(self.log(n, 800) for n in names))

    def flow_run_process(self, worker: str) -> tuple[int, str] | None:
        """The flow-run process a worker is running now, and its flow run id."""
        proc = self.procs.get(worker)
        if proc is None:
            return None
        for pid in descendants(proc.pid):
            run_id = process_env(pid).get("PREFECT__FLOW_RUN_ID")
            if run_id:
                return pid, run_id
        return None

    # the REST API, for checks ---------------------------------------------------------------

    def api_get(self, path: str) -> Any:
        return self._request(urllib.request.Request(self.api + path))

    def api_post(self, path: str, body: dict[str, Any]) -> Any:
        headers = {"Content-Type": "application/json"}
        return self._request(urllib.request.Request(self.api + path, data=json.dumps(body).encode(), headers=headers))

    def _request(self, request: urllib.request.Request, attempts: int = 4) -> Any:
        """One API call; a timeout is tried again (SQLite makes a busy server wait for its write lock)."""
        for attempt in range(attempts):
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError:
                raise
            except OSError:  # a timeout, or a connection the busy server dropped
                if attempt == attempts - 1:
                    raise
                time.sleep(2)

    def flow_runs(self, flow_name: str | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"limit": 200}
        if flow_name:
            body["flows"] = {"name": {"any_": [flow_name]}}
        return self.api_post("/flow_runs/filter", body)
