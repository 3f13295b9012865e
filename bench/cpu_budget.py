"""CPU budgets for benchmark processes, so that on a small machine each part gets a known share of the cores and
the machine as a whole is not what a figure measures (bench/scaling.py).

With the cgroup v1 `cpu` controller (`/sys/fs/cgroup/cpu`, writable as root) every budget is a child group of
one group per benchmark run, with a CFS quota: `cpu.cfs_quota_us` / `cpu.cfs_period_us` = the share of one core
(Linux Documentation/scheduler/sched-bwc.rst). A process started through `Budgets.prefix(name)` writes its own
pid into the group's `cgroup.procs` and then execs the command, so everything it forks (gunicorn's workers)
inherits the group; processes that already run (PostgreSQL's backends) are moved with `Budgets.move`. The same
group is made in the `cpuacct` hierarchy when it is mounted, to read the CPU time each budget used. A short
period (20 ms) keeps a throttled group's pauses short.

Without a writable cgroup v1 `cpu` controller, `Budgets` falls back to pinning with `taskset` (whole cores, given
per budget), and says so in `describe()`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CPU_ROOT = Path("/sys/fs/cgroup/cpu")
CPUACCT_ROOT = Path("/sys/fs/cgroup/cpuacct")
PERIOD_US = 20_000


@dataclass(frozen=True)
class Budget:
    name: str
    cores: float  # share of one core: 0.5 = half a core (cgroups)
    cpus: str | None = None  # the cores to pin to when falling back to taskset ("0", "1", "0-1")


def cgroup_v1_writable() -> bool:
    """Whether this process may make child groups of the cgroup v1 `cpu` controller and set their quota."""
    if not (CPU_ROOT / "cgroup.procs").exists() or not (CPU_ROOT / "cpu.cfs_quota_us").exists():
        return False
    probe = CPU_ROOT / f"consent-broker-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError:
        return False
    try:
        (probe / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
        (probe / "cpu.cfs_quota_us").write_text(f"{PERIOD_US // 2}\n")
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


class Budgets:
    """CPU budgets for one benchmark run; a context manager that removes its groups afterwards."""

    def __init__(self, budgets: list[Budget], *, mode: str = "auto") -> None:
        if mode not in {"auto", "cgroup", "taskset", "none"}:
            raise ValueError(f"CPU budget mode must be auto, cgroup, taskset or none, not {mode!r}")
        if mode in {"auto", "cgroup"}:
            if cgroup_v1_writable():
                mode = "cgroup"
            elif mode == "cgroup":
                raise RuntimeError(f"the cgroup v1 cpu controller is not writable here ({CPU_ROOT})")
            else:
                mode = "taskset" if shutil.which("taskset") else "none"
        self.mode = mode
        self.budgets = {b.name: b for b in budgets}
        self.parent = f"consent-broker-bench-{os.getpid()}"
        self._moved: dict[str, list[int]] = {b.name: [] for b in budgets}

    def __enter__(self) -> Budgets:
        if self.mode == "cgroup":
            for root in self._roots():
                (root / self.parent).mkdir(exist_ok=True)
            for budget in self.budgets.values():
                for root in self._roots():
                    (root / self.parent / budget.name).mkdir(exist_ok=True)
                group = CPU_ROOT / self.parent / budget.name
                (group / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
                (group / "cpu.cfs_quota_us").write_text(f"{round(budget.cores * PERIOD_US)}\n")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.mode != "cgroup":
            return
        for root in self._roots():
            base = root / self.parent
            for budget in self.budgets.values():
                group = base / budget.name
                # Whatever still runs in a group (a backend moved there) goes back to the root group first: a
                # group with processes cannot be removed.
                with contextlib.suppress(OSError):
                    for pid in (group / "cgroup.procs").read_text().split():
                        with contextlib.suppress(OSError):
                            (root / "cgroup.procs").write_text(f"{pid}\n")
                with contextlib.suppress(OSError):
                    group.rmdir()
            with contextlib.suppress(OSError):
                base.rmdir()

    def _roots(self) -> list[Path]:
        roots = [CPU_ROOT]
        if (CPUACCT_ROOT / "cgroup.procs").exists():
            roots.append(CPUACCT_ROOT)
        return roots

    def prefix(self, name: str) -> list[str]:
        """What to put before a command to run it, and all it forks, within the budget `name`."""
        budget = self.budgets[name]
        if self.mode == "cgroup":
            procs = " ".join(f'"{root / self.parent / name / "cgroup.procs"}"' for root in self._roots())
            # The shell puts itself into the groups, then becomes the command: no pid is left outside.
            script = f'for g in {procs}; do echo $$ > "$g" || exit 97; done; exec "$@"'
            return ["sh", "-c", script, "sh"]
        if self.mode == "taskset" and budget.cpus:
            return ["taskset", "-c", budget.cpus]
        return []

    def move(self, name: str, pids: list[int]) -> list[int]:
        """Move running processes into the budget `name` (cgroups), or pin them (taskset); returns those moved.
        A process that has exited meanwhile is skipped."""
        budget = self.budgets[name]
        moved = []
        for pid in pids:
            try:
                if self.mode == "cgroup":
                    for root in self._roots():
                        (root / self.parent / name / "cgroup.procs").write_text(f"{pid}\n")
                elif self.mode == "taskset" and budget.cpus:
                    os.sched_setaffinity(pid, _cpu_list(budget.cpus))
                else:
                    continue
            except (OSError, ProcessLookupError):
                continue
            moved.append(pid)
        self._moved[name].extend(p for p in moved if p not in self._moved[name])
        return moved

    def moved(self, name: str) -> list[int]:
        """The processes moved into the budget `name` so far."""
        return list(self._moved[name])

    def usage(self) -> dict[str, dict[str, Any]]:
        """Per budget: CPU seconds used (cpuacct) and CFS throttling so far (cgroups only; read before and after a
        run and take the difference with `Budgets.delta`)."""
        found: dict[str, dict[str, Any]] = {}
        if self.mode != "cgroup":
            return found
        for name in self.budgets:
            stats: dict[str, Any] = {}
            with contextlib.suppress(OSError, ValueError):
                for line in (CPU_ROOT / self.parent / name / "cpu.stat").read_text().splitlines():
                    key, value = line.split()
                    if key in {"nr_periods", "nr_throttled", "throttled_time"}:
                        stats[key] = int(value)
            with contextlib.suppress(OSError, ValueError):
                stats["cpu_ns"] = int((CPUACCT_ROOT / self.parent / name / "cpuacct.usage").read_text())
            found[name] = stats
        return found

    @staticmethod
    def delta(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], seconds: float) -> dict[str, Any]:
        """What each budget used between two `usage()` readings `seconds` apart: cores used on average, the share
        of CFS periods in which it was throttled, and the time it spent throttled."""
        out: dict[str, Any] = {}
        for name, end in after.items():
            start = before.get(name, {})

            def diff(key: str, end: dict[str, Any] = end, start: dict[str, Any] = start) -> int:
                return int(end.get(key, 0)) - int(start.get(key, 0))

            periods = diff("nr_periods")
            out[name] = {
                "cores_used": round(diff("cpu_ns") / 1e9 / seconds, 3) if seconds and "cpu_ns" in end else None,
                "throttled_periods_pct": round(100 * diff("nr_throttled") / periods, 1) if periods else 0.0,
                "throttled_s": round(diff("throttled_time") / 1e9, 2),
            }
        return out

    def describe(self) -> dict[str, Any]:
        if self.mode == "cgroup":
            how = (
                f"cgroup v1 cpu controller: one group per budget with cpu.cfs_quota_us = share × "
                f"cpu.cfs_period_us ({PERIOD_US} µs); processes put in at start (children inherit) or moved"
            )
            budgets: dict[str, Any] = {b.name: {"cores": b.cores} for b in self.budgets.values()}
        elif self.mode == "taskset":
            how = "taskset: processes pinned to whole cores (no cgroup v1 cpu controller to set quotas)"
            budgets = {b.name: {"cpus": b.cpus} for b in self.budgets.values()}
        else:
            how = "none: no CPU budgets, every process shares every core"
            budgets = {}
        return {"mode": self.mode, "how": how, "budgets": budgets}


def _cpu_list(spec: str) -> set[int]:
    cpus: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus
