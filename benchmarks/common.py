"""What every benchmark script measures the same way: process CPU and memory, p90, versions."""

from __future__ import annotations

import statistics
import subprocess
from collections.abc import Sequence
from typing import NoReturn

import psutil


def p90(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds the process has used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def memory(pid: int) -> tuple[int, int]:
    """Resident and peak resident bytes, from /proc (VmRSS, VmHWM)."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


def version_line(argv: Sequence[str]) -> str:
    """The first line a program prints for ``--version`` (Go tools print it on stderr)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def raise_interrupt(signum: int, _frame: object) -> NoReturn:
    """A SIGTERM handler that unwinds like Ctrl-C, so every started process is stopped."""
    raise KeyboardInterrupt(f"signal {signum}")
