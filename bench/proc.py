"""CPU time and memory of a process tree, from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def parse_cpu_seconds(stat_line: str, ticks: int = TICKS) -> float:
    """utime + stime of a /proc/<pid>/stat line, in seconds (pure, for the tests)."""
    fields = stat_line[stat_line.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / ticks


def parse_status_kib(status_text: str, field: str) -> int | None:
    """A ``kB`` field (VmRSS, VmHWM, ...) of /proc/<pid>/status, in KiB."""
    for line in status_text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    result, todo = [], [pid]
    while todo:
        current = todo.pop()
        result.append(current)
        todo.extend(children.get(current, []))
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its live descendants."""
    total = 0.0
    for member in descendants(pid):
        try:
            total += parse_cpu_seconds(Path(f"/proc/{member}/stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
    return total


def memory_kib(pid: int, field: str = "VmRSS") -> int | None:
    try:
        return parse_status_kib(Path(f"/proc/{pid}/status").read_text(), field)
    except OSError:
        return None
