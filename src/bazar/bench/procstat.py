"""Server CPU per request, from /proc: what each process of the cluster spent on the run.

A process's CPU time is `utime + stime` of `/proc/<pid>/stat` (all its threads), in clock
ticks (`SC_CLK_TCK`, 100 per second on Linux: 10 ms resolution, so a window of a few thousand
requests is enough for a per-request figure). It is read at the start and at the end of the
measured window; the difference divided by the requests measured is the CPU per request.

Which processes: every replica's pid comes from the front end's `GET /cluster`; the front end's
own pid is found from its listening socket (`/proc/net/tcp{,6}`: the port in LISTEN state ->
socket inode -> the process holding `socket:[inode]` among `/proc/*/fd`), only for a front end
on this host. A pid that cannot be found, or a process that died during the window (failover),
is None and the rest goes on.

The parsers are pure functions of the file texts; the readers take the /proc root as an
argument, so tests hand them a fake tree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
LISTEN = "0A"  # the `st` column of /proc/net/tcp for a listening socket
STAT_UTIME_FIELD = 14  # 1-based field numbers of /proc/<pid>/stat (proc(5))
STAT_STIME_FIELD = 15

Sample = dict[str, int | None]
"""CPU ticks by process name at one moment; None where it could not be read."""


def stat_cpu_ticks(text: str) -> int:
    """utime + stime of a `/proc/<pid>/stat` text.

    Raises: ValueError if the text is not a stat line.
    """
    # The command name (field 2) is in parentheses and may hold spaces and parentheses:
    # the fields after it start after the last ')'.
    _, closing, rest = text.rpartition(")")
    if not closing:
        raise ValueError("not a /proc/<pid>/stat line")
    fields = rest.split()
    first = 3  # fields[0] is field 3 (the state)
    try:
        utime = int(fields[STAT_UTIME_FIELD - first])
        stime = int(fields[STAT_STIME_FIELD - first])
    except (IndexError, ValueError) as err:
        raise ValueError("not a /proc/<pid>/stat line") from err
    assert utime >= 0
    assert stime >= 0
    return utime + stime


def cpu_ticks(pid: int | None, proc: Path = PROC) -> int | None:
    """The process's CPU ticks so far, or None if there is no such process (any more)."""
    if pid is None:
        return None
    try:
        return stat_cpu_ticks((proc / str(pid) / "stat").read_text())
    except (OSError, ValueError):
        return None


def sample(pids: Mapping[str, int | None], proc: Path = PROC) -> Sample:
    """Every process's CPU ticks now."""
    return {name: cpu_ticks(pid, proc) for name, pid in pids.items()}


def listening_inodes(table: str, port: int) -> set[int]:
    """The socket inodes listening on `port` (any local address) in a /proc/net/tcp text."""
    found: set[int] = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != LISTEN:
            continue
        _, _, port_hex = fields[1].rpartition(":")
        try:
            if int(port_hex, 16) == port:
                found.add(int(fields[9]))
        except ValueError:
            continue
    return found


def _holder(inodes: set[int], proc: Path) -> int | None:
    """The first pid (lowest) with a descriptor on one of the socket inodes."""
    targets = {f"socket:[{inode}]" for inode in inodes}
    pids = sorted(int(entry.name) for entry in proc.iterdir() if entry.name.isdigit())
    for pid in pids:
        try:
            descriptors = list((proc / str(pid) / "fd").iterdir())
        except OSError:  # gone, or not ours to read
            continue
        for descriptor in descriptors:
            try:
                if os.readlink(descriptor) in targets:
                    return pid
            except OSError:
                continue
    return None


def pid_listening_on(port: int, proc: Path = PROC) -> int | None:
    """The pid of the process listening on `port` on this host, or None."""
    inodes: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            inodes |= listening_inodes((proc / "net" / table).read_text(), port)
        except OSError:
            continue
    inodes.discard(0)
    return _holder(inodes, proc) if inodes else None


@dataclass(frozen=True, slots=True)
class CpuUse:
    """Per process: CPU ms per request and % of one core over the window (None: unknown)."""

    ms_per_request: dict[str, float | None]
    percent: dict[str, float | None]
    total_ms_per_request: float | None


def cpu_use(
    before: Sample,
    after: Sample,
    *,
    requests: int,
    window_s: float,
    ticks_per_s: int = CLOCK_TICKS_PER_S,
) -> CpuUse:
    """What each process spent between two samples, per request and as a share of a core.
    The total adds the processes that are known; it is None when none is."""
    assert window_s > 0, window_s
    per_request: dict[str, float | None] = {}
    percent: dict[str, float | None] = {}
    for name, start in before.items():
        end = after.get(name)
        if start is None or end is None or end < start:  # unknown, or a new process
            per_request[name] = percent[name] = None
            continue
        spent_ms = (end - start) * 1000 / ticks_per_s
        per_request[name] = spent_ms / requests if requests else None
        percent[name] = spent_ms / 10 / window_s  # ms per s of window / 1000 * 100
    known = [value for value in per_request.values() if value is not None]
    total = sum(known) if known else None
    return CpuUse(per_request, percent, total)
