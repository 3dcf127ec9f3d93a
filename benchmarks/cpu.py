"""Where the CPU went during one phase: CPU-seconds per process role, sampled on the host.

On a 2-core machine the service's model replica shares the cores with the Ingress, the
decode children, Serve's proxy and controller, Ray's own daemons and the load generator,
while a direct `BatchedInferencePipeline` has them to itself. This ledger is the profile
that says how much of the machine the replica actually got, so a ratio that falls short of
its goal can be read against it.

Every process on the host is sampled every `interval_s`; a process's CPU time counts from
the phase's start (or its birth) to its last sample, so short-lived decode children are
counted too. Roles come from Ray's process titles (`ray::ServeReplica:<app>:<deployment>`,
`ray::ProxyActor`, ...). When the benchmark started the service itself, only its own
descendants get a role; every other process (another Ray on a shared host included) is
"other", which is how noise from other work shows up.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

ROLES = (
    "transcriber",
    "ingress",
    "decode children",
    "tracker",
    "proxy",
    "serve controller",
    "ray daemons",
    "benchmark process",
    "other",
)

_RAY_DAEMONS = (
    "gcs_server",
    "raylet",
    "dashboard",
    "log_monitor",
    "monitor.py",
    "runtime_env",
    "ray::IDLE",
    "default_worker.py",
    "ray/_private",
)


def role_of(cmdline: str, pid: int, own_pid: int) -> str:
    """The role of one process, from its command line (Ray sets titles there)."""
    if pid == own_pid:
        return "benchmark process"
    if "decode_worker_main" in cmdline:
        return "decode children"
    if "ServeReplica:" in cmdline:
        deployment = cmdline.split("ServeReplica:", 1)[1].split(":", 1)[-1]
        if deployment.startswith("Transcriber"):
            return "transcriber"
        if deployment.startswith("Ingress"):
            return "ingress"
        return "other"
    if "ProxyActor" in cmdline:
        return "proxy"
    if "ServeController" in cmdline:
        return "serve controller"
    if "TrackerActor" in cmdline or "JobTracker" in cmdline:
        return "tracker"
    if any(marker in cmdline for marker in _RAY_DAEMONS):
        return "ray daemons"
    return "other"


def _descendants(pid: int) -> set[int]:
    """Processes started (transitively) by `pid`: the local Ray of a benchmark run."""
    try:
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def _busy(times: Any) -> float:
    return float(times.user + times.system)


@dataclass
class CpuLedger:
    """Samples every process's CPU time in a thread; `result()` sums the deltas by role."""

    interval_s: float = 0.5
    _first: dict[tuple[int, float], float] = field(default_factory=dict)
    _last: dict[tuple[int, float], float] = field(default_factory=dict)
    _roles: dict[tuple[int, float], str] = field(default_factory=dict)
    _host_start: Any = None
    _host_end: Any = None
    _started: float = 0.0
    _wall: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self, first: bool) -> None:
        own = os.getpid()
        ours = _descendants(own)
        for proc in psutil.process_iter(["pid", "cmdline", "create_time", "cpu_times"]):
            info = proc.info
            times = info.get("cpu_times")
            if times is None:
                continue
            key = (int(info["pid"]), float(info.get("create_time") or 0.0))
            busy = _busy(times)
            if key not in self._roles:
                cmdline = " ".join(info.get("cmdline") or [])
                # A Ray started by this process is ours; another one on the host is noise.
                theirs = bool(ours) and key[0] not in ours and key[0] != own
                self._roles[key] = "other" if theirs else role_of(cmdline, key[0], own)
                # A process born during the phase spent all its CPU time inside it.
                self._first[key] = busy if first else 0.0
            self._last[key] = busy

    def __enter__(self) -> CpuLedger:
        self._host_start = psutil.cpu_times()
        self._started = time.perf_counter()
        self._sample(first=True)

        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self._sample(first=False)

        self._thread = threading.Thread(target=loop, name="cpu-ledger", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sample(first=False)
        self._wall = time.perf_counter() - self._started
        self._host_end = psutil.cpu_times()

    def result(self) -> dict[str, Any]:
        """CPU-seconds by role, the wall, and how busy the whole host was (in cores)."""
        by_role = dict.fromkeys(ROLES, 0.0)
        for key, last in self._last.items():
            by_role[self._roles[key]] += max(0.0, last - self._first.get(key, 0.0))
        start, end = self._host_start, self._host_end
        idle = (end.idle + getattr(end, "iowait", 0.0)) - (
            start.idle + getattr(start, "iowait", 0.0)
        )
        total = sum(end) - sum(start)
        cores = psutil.cpu_count() or 1
        wall = self._wall or 1e-9
        return {
            "wall_s": round(self._wall, 3),
            "cores": cores,
            "host_busy_cores": round((total - idle) / total * cores, 3) if total > 0 else None,
            "cpu_s": {role: round(value, 3) for role, value in by_role.items()},
            "cores_used": {role: round(value / wall, 3) for role, value in by_role.items()},
        }


_COLUMNS = (
    ("transcriber", ("transcriber",)),
    ("ingress + decode", ("ingress", "decode children")),
    ("tracker", ("tracker",)),
    ("proxy", ("proxy",)),
    ("Ray (controller, daemons)", ("serve controller", "ray daemons")),
    ("benchmark process", ("benchmark process",)),
    ("other", ("other",)),
)


def _phases(results: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    shapes = results.get("shapes") or {}
    base = shapes.get("baselines") or {}
    out: list[tuple[str, dict[str, Any] | None]] = [
        ("baseline: ceiling over the burst clips", (base.get("burst_ceiling") or {}).get("cpu")),
        ("service: bursts (both modes)", (shapes.get("burst") or {}).get("cpu")),
        ("baseline: direct pipeline, long recording", (base.get("long_pipeline") or {}).get("cpu")),
        ("service: long recording, sync", (shapes.get("long") or {}).get("cpu")),
        ("service: long recording, job", (shapes.get("job") or {}).get("cpu")),
        ("service: mixed load", (shapes.get("mixed") or {}).get("cpu")),
    ]
    for model, data in (results.get("models") or {}).items():
        for level in data.get("levels", []):
            out.append((f"service: {model}, {level['concurrency']} clients", level.get("cpu")))
    return [(name, cpu) for name, cpu in out if cpu]


def cpu_markdown(results: dict[str, Any]) -> list[str]:
    """The "Where the CPU went" table: cores used per role in each measured phase."""
    phases = _phases(results)
    if not phases:
        return []
    head = " | ".join(name for name, _ in _COLUMNS)
    lines = [
        "### Where the CPU went (cores used, averaged over the phase)",
        "",
        "Sampled from every process on the host (`benchmarks/cpu.py`). In a baseline the "
        "benchmark process *is* the model; against the service it is the load generator.",
        "",
        f"| phase | wall s | host busy | {head} |",
        "|---|---:|---:|" + "---:|" * len(_COLUMNS),
    ]
    for name, cpu in phases:
        used = cpu["cores_used"]
        cells = " | ".join(f"{sum(used.get(r, 0.0) for r in roles):.2f}" for _, roles in _COLUMNS)
        busy = cpu.get("host_busy_cores")
        lines.append(
            f"| {name} | {cpu['wall_s']:.2f} | {busy if busy is not None else '-'} | {cells} |"
        )
    return lines
