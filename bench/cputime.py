"""CPU time of the processes a benchmark drives, read from Linux ``/proc``.

Wall-clock rates on a shared 2-core machine swing with other load; CPU seconds per operation of the
service, its database and the load generator are the figures that compare across runs.
"""

from __future__ import annotations

import os
from pathlib import Path


def postmaster_pid(cluster: object | None) -> int:
    """The PostgreSQL server's pid (from ``postmaster.pid``), or 0 (SQLite, or an external server)."""
    folder = getattr(cluster, "_dir", None)
    try:
        return int((Path(folder) / "data" / "postmaster.pid").read_text().split()[0]) if folder else 0
    except (OSError, ValueError, IndexError):
        return 0


def process_tree_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (Linux ``/proc``); 0 for pid 0."""
    if pid == 0:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        # Own time plus reaped children's (a PostgreSQL backend that exits is counted in its parent).
        stats[int(entry.name)] = sum(int(f) for f in fields[11:15]) / ticks
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += stats.get(current, 0.0)
        todo.extend(children.get(current, []))
    return total


def machine_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs since boot, from ``/proc/stat``; (0, 0) where it cannot be read.

    Steal is time the hypervisor gave this virtual machine's CPUs to other guests: a level measured while
    it was high ran on less machine than the figures assume, and its rate says little about the code.
    """
    try:
        fields = [int(f) for f in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


def steal_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of the machine's CPU time stolen by the hypervisor between two ``machine_ticks`` readings."""
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total > 0 else 0.0
