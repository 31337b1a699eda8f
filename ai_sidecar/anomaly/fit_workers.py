"""Worker processes that share a detector fit: the training's second core.

A fit replays the history point by point, and at 10,000 series each step is a
few hundred numpy calls that hold the GIL, so threads do not help (measured:
slower than one); processes do. :class:`FitProcesses` is the
:class:`~ai_sidecar.anomaly.detector.ReplayWorkers` the trainer hands to
``Detector.fit``: the training process replays one slice of the series, the
workers the others, and the result is the single-process one, bit for bit.

Workers are spawned (the training process has threads) on the first slice
they are given, so a signal too small to split never starts one, and they die
with the training process, as it dies with the scoring process.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from types import TracebackType

import numpy as np
from numpy.typing import NDArray

from ai_sidecar.anomaly.detector import DetectorParams, StateArrays, replay_part
from ai_sidecar.worker_process import die_with_parent

__all__ = ["FIT_CORES", "FitProcesses", "fit_worker_count"]

# The budget: a full fit on 2 cores. The training process is one.
FIT_CORES = 2


def fit_worker_count(cores: int = FIT_CORES) -> int:
    """Workers beside the training process: one fewer than the cores it may use."""
    return max(min(cores, len(os.sched_getaffinity(0))) - 1, 0)


class FitProcesses:
    """``count`` spawned processes for ``Detector.fit`` (a context manager that ends them)."""

    def __init__(self, count: int = 1) -> None:
        if count < 0:
            raise ValueError("count must be 0 or more")
        self._count = count
        self._executor = (
            ProcessPoolExecutor(
                max_workers=count,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=die_with_parent,
            )
            if count
            else None
        )

    @property
    def count(self) -> int:
        return self._count

    def submit(
        self,
        params: DetectorParams,
        state: StateArrays,
        timestamps: NDArray[np.float64],
        values: NDArray[np.float64],
    ) -> Future[tuple[StateArrays, NDArray[np.int64]]]:
        if self._executor is None:
            raise RuntimeError("FitProcesses(0) has no worker to submit to")
        return self._executor.submit(replay_part, params, state, timestamps, values)

    def close(self) -> None:
        """End the workers (waits for a slice in progress)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> FitProcesses:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
