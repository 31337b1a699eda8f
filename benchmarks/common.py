"""What every benchmark script measures the same way: process CPU and memory, p90, versions."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import NoReturn

import psutil

from scripts.localstack import Service, find_binary, free_port

# What Prometheus 2.42 sends on every scrape: the format negotiation and gzip
# change what the server has to do, so they are part of a fair comparison.
SCRAPE_HEADERS = {
    "Accept": (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
        "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    ),
    "Accept-Encoding": "gzip",
    "User-Agent": "Prometheus/2.42.0",
    "X-Prometheus-Scrape-Timeout-Seconds": "10",
}


def missing_programs(names: Iterable[str]) -> list[str]:
    """Those of ``names`` found neither beside this Python (the venv), on PATH, nor in sbin."""
    search = os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", ""), "/usr/sbin"]
    )
    return [name for name in names if shutil.which(name, path=search) is None]


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


def start_scout_exporter(
    stack: ExitStack, workdir: Path, config: Path, host: str = "127.0.0.1", ready: float = 30.0
) -> tuple[int, int]:
    """Start ``scout-exporter`` (host collector off) with ``config``: its port and pid.

    It is stopped when ``stack`` closes, also on errors and Ctrl-C.
    """
    port = free_port(host)
    scout = Service(
        name="scout-exporter",
        argv=[
            find_binary("scout-exporter"),
            f"--web.listen-address={host}:{port}",
            "--no-collector.host",
            f"--config.file={config}",
            "--log.level=warn",
        ],
        ready_url=f"http://{host}:{port}/metrics",
        log_path=workdir / "scout.log",
    )
    stack.callback(scout.stop, 5)
    scout.start()
    scout.wait_ready(ready)
    assert scout.process is not None
    return port, scout.process.pid
