"""The watch over the sidecar's child processes outlives a child that cannot be started."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest

from ai_sidecar import worker_process
from ai_sidecar.metrics import ForwardedMetrics
from ai_sidecar.worker_process import WorkerProcess


def touch_and_exit(marker: Path, *args: Any) -> None:
    """The child: leave a mark, then exit (the watch starts another)."""
    marker.touch()


class RefusingFirstStarts:
    """The spawn context, but the first ``refusals`` starts fail as a refused fork does."""

    def __init__(self, refusals: int) -> None:
        self.real = multiprocessing.get_context("spawn")
        self.refusals = refusals

    def Pipe(self, duplex: bool) -> Any:
        return self.real.Pipe(duplex=duplex)

    def Process(self, **kwargs: Any) -> Any:
        process = self.real.Process(**kwargs)
        if self.refusals:
            self.refusals -= 1

            def refuse() -> None:
                raise OSError(11, "Resource temporarily unavailable")

            process.start = refuse
        return process


def test_a_child_that_cannot_be_started_is_tried_again(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(worker_process, "RESTART_DELAY", 0.05)
    marker = tmp_path / "started"
    watch = WorkerProcess(
        marker,  # type: ignore[arg-type]  # the test child's only argument
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        ForwardedMetrics([]),
        "warning",
        "logfmt",
        target=touch_and_exit,
        name="scout-test-child",
    )
    watch._context = RefusingFirstStarts(refusals=2)  # type: ignore[assignment]
    watch.start()
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            if time.monotonic() > deadline:
                pytest.fail("no child ran after two refused starts")
            time.sleep(0.05)
    finally:
        watch.stop()
    refused = [r for r in caplog.records if "cannot run the child process" in r.getMessage()]
    assert len(refused) == 2
