"""History fetch and training for the anomaly models: N series x D days from a real Prometheus.

What training a signal costs, from the range queries to the stored model.
The script backfills ``--series`` gauge series of ``--days`` days at
``--step`` seconds into a Prometheus of its own (``promtool tsdb
create-blocks-from openmetrics``, one file per 2-hour block, ``--jobs`` at a
time, each deleted once turned into blocks), starts it on a free loopback
port, waits for it to finish compacting, then:

1. reads the whole history as the trainer does
   (:class:`ai_sidecar.anomaly.history.HistoryStream`: windows sized so no
   request passes 11,000 points per series nor about a million samples, two
   in flight, each time-boxed and retried), letting each window go: wall
   time, the client's CPU and peak RSS, requests, bytes on the wire (gzip,
   from Prometheus's own ``prometheus_http_response_size_bytes``) and of JSON
   the client decoded, Prometheus's CPU and peak RSS meanwhile;
2. unless ``--no-train``, trains one signal over those series through the
   sidecar's own path (:class:`ai_sidecar.anomaly.trainer.TrainingProcess`,
   the process the scoring loop spawns, with its fit worker): wall time, the
   CPU and peak RSS of each process and of both together, Prometheus's CPU
   and peak RSS meanwhile;
3. asks for the same history in windows of 11,000 points without the sample
   budget, as a client that only honours the per-series cap would: the
   reason the budget exists.

A benchmark: it prints, it asserts nothing.

Usage: python -m benchmarks.anomaly_history [--series 10000] [--days 14] [--step 60]
                                            [--keep DIR] [--no-train]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import math
import resource
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import aiohttp
import numpy as np
import psutil

from ai_sidecar.anomaly.history import FetchOptions, HistoryStream
from ai_sidecar.anomaly.trainer import TrainingJob, TrainingProcess
from ai_sidecar.config import AnomalyConfig
from ai_sidecar.promql import HttpPromQLClient, PromQLError
from benchmarks.common import cpu_seconds, version_line
from scripts.localstack import find_binary, free_port, prometheus_service
from tests.peers.history import backfill as create_blocks

METRIC = "scout_bench_load"
DAY = 86_400


BLOCK = 7_200  # promtool's block: it reads its input once per 2 hours it spans
SEED = 12


def write_block(path: Path, series: int, first: int, step: int) -> int:
    """Two hours of every series as OpenMetrics text; the number of samples written.

    Each series keeps its level across blocks (drawn from a fixed seed); the
    noise of a block comes from a seed of its own, so blocks can be written in
    any order and in parallel. One ``%`` formatting per series: writing 200 M
    samples one f-string at a time would take longer than promtool.
    """
    times = np.arange(first, first + BLOCK, step)
    base = np.random.default_rng(SEED).uniform(10, 1000, series)
    noise = np.random.default_rng([SEED, first])
    wave = 1 + 0.3 * np.sin(2 * math.pi * (times % DAY) / DAY)
    line_ends = "".join(f" %.3f {t}\n" for t in times)
    with path.open("w") as out:
        out.write(f"# TYPE {METRIC} gauge\n")
        for index in range(series):
            values = base[index] * wave + noise.normal(0, base[index] * 0.02, times.size)
            name = f'{METRIC}{{job="bench",instance="s{index:05d}"}}'
            # Every line of the series: its name, then " value time".
            template = name + line_ends.replace("\n", "\n" + name)[: -len(name)]
            out.write(template % tuple(values.tolist()))
        out.write("# EOF\n")
    return int(times.size) * series


def backfill_block(directory: Path, series: int, first: int, step: int) -> None:
    """One block: its text written, turned into TSDB blocks, deleted."""
    path = directory / f"block-{first}.om"
    try:
        write_block(path, series, first, step)
        create_blocks(path, directory / "prometheus")
    finally:
        path.unlink(missing_ok=True)


def backfill(directory: Path, series: int, days: int, step: int, end: int, jobs: int) -> float:
    """``days`` of history before ``end`` under ``directory/prometheus``; seconds it took.

    One file per 2-hour block, so promtool reads each once (its cost grows
    with file length times the blocks a file spans), ``jobs`` blocks at a time.
    """
    began = time.monotonic()
    firsts = range(end - days * DAY, end, BLOCK)
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        pending = [pool.submit(backfill_block, directory, series, first, step) for first in firsts]
        for done, future in enumerate(concurrent.futures.as_completed(pending), start=1):
            future.result()
            if done % 12 == 0 or done == len(pending):
                elapsed = time.monotonic() - began
                print(f"  {done}/{len(pending)} blocks backfilled ({elapsed:.0f}s)", flush=True)
    return time.monotonic() - began


class Bytes:
    """Body bytes of every response, after aiohttp undid the gzip."""

    def __init__(self) -> None:
        self.decoded = 0

    def trace(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()

        async def chunk(
            _: object, __: object, params: aiohttp.TraceResponseChunkReceivedParams
        ) -> None:
            self.decoded += len(params.chunk)

        config.on_response_chunk_received.append(chunk)
        return config


class Sampler:
    """Polls processes' resident memory and CPU every ``interval`` seconds, in a thread.

    ``peaks`` is the largest RSS of each process seen, ``cpu`` its last CPU
    seconds (so the CPU of a process that has ended is what it had used when
    last seen, at most ``interval`` short); ``tree_peak`` the largest sum over
    the processes at one moment.
    """

    def __init__(self, pick: Callable[[], list[psutil.Process]], interval: float = 0.2) -> None:
        self._pick = pick
        self._interval = interval
        self.peaks: dict[int, int] = {}
        self.cpu: dict[int, float] = {}
        self.tree_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for process in self._pick():
                try:
                    rss = process.memory_info().rss
                    times = process.cpu_times()
                except psutil.Error:
                    continue
                total += rss
                self.peaks[process.pid] = max(self.peaks.get(process.pid, 0), rss)
                self.cpu[process.pid] = times.user + times.system
            self.tree_peak = max(self.tree_peak, total)
            self._stop.wait(self._interval)


def response_bytes(base: str) -> float:
    """Bytes Prometheus has sent answering range queries: its own counter, after gzip."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:
        text = response.read().decode()
    prefix = 'prometheus_http_response_size_bytes_sum{handler="/api/v1/query_range"} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


async def fetch(
    base: str, start: int, end: int, step: int, options: FetchOptions
) -> dict[str, float]:
    """The whole history window by window, as the trainer reads it, each let go at once."""
    counted = Bytes()
    began = time.monotonic()
    cpu_began = time.process_time()
    points = windows = 0
    async with aiohttp.ClientSession(trace_configs=[counted.trace()]) as session:
        stream = HistoryStream(
            HttpPromQLClient(base, session),
            METRIC,
            start=start,
            end=end,
            step=step,
            keep_labels=["job", "instance"],
            max_series=1_000_000,
            options=options,
        )
        async for window in stream.windows():
            points += int(np.count_nonzero(np.isfinite(window.values)))
            windows += 1
    return {
        "seconds": time.monotonic() - began,
        "cpu": time.process_time() - cpu_began,
        "requests": stream.requests,
        "series": len(stream.keys),
        "grid": stream.grid.size,
        "points": points,
        "decoded_bytes": counted.decoded,
    }


def training_config(series: int, days: int, step: int) -> AnomalyConfig:
    """One signal over the benchmark's series, with the config's defaults otherwise."""
    signal = {
        "name": "bench",
        "query": METRIC,
        "step": f"{step}s",
        "history": f"{days}d",
        "keep_labels": ["job", "instance"],
        "max_series": series,
    }
    return AnomalyConfig.model_validate(
        {"enabled": True, "query_delay": "0s", "signals": [signal]}, strict=False
    )


def report_fetch(found: dict[str, float], wire: float, prometheus: Sampler, pid: int) -> None:
    samples = found["points"]
    print(
        f"fetched {found['series']:.0f} series x {found['grid']:.0f} steps "
        f"({samples / 1e6:.1f} M samples) in {found['seconds']:.1f}s "
        f"({samples / found['seconds'] / 1e6:.2f} M samples/s), {found['requests']:.0f} requests"
    )
    print(
        f"  on the wire (gzip) {wire / 1e6:.0f} MB ({wire / samples:.2f} B/sample), "
        f"JSON decoded {found['decoded_bytes'] / 1e9:.2f} GB "
        f"({found['decoded_bytes'] / samples:.1f} B/sample)"
    )
    client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        f"  client CPU {found['cpu']:.1f}s, peak RSS {client_peak / 2**30:.2f} GiB; Prometheus CPU "
        f"{prometheus.cpu[pid]:.1f}s, peak RSS {prometheus.peaks[pid] / 2**30:.2f} GiB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--step", type=int, default=60)
    parser.add_argument("--jobs", type=int, default=2, help="blocks backfilled at a time")
    parser.add_argument("--keep", type=Path, help="reuse (or fill) this directory's blocks")
    parser.add_argument("--no-train", action="store_true", help="measure the fetch alone")
    parser.add_argument("--no-fetch", action="store_true", help="measure the training alone")
    parser.add_argument(
        "--settle", type=float, default=70.0, help="seconds before waiting for Prometheus to idle"
    )
    args = parser.parse_args()
    directory = args.keep or Path(tempfile.mkdtemp(prefix="scout-history-"))
    directory.mkdir(parents=True, exist_ok=True)
    end = (int(time.time()) - 3600) // DAY * DAY
    start = end - args.days * DAY
    print(version_line([find_binary("prometheus"), "--version"]))
    print(
        f"{args.series} series x {args.days} days at {args.step}s: "
        f"{args.series * args.days * DAY // args.step:,} samples"
    )
    if not (directory / "prometheus").exists():
        took = backfill(directory, args.series, args.days, args.step, end, args.jobs)
        print(f"backfilled in {took:.0f}s")
    config = directory / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1m}\n")
    port = free_port()
    service = prometheus_service(config, directory, port, ["--storage.tsdb.retention.time=400d"])
    service.start()
    try:
        service.wait_ready(timeout=300)
        assert service.process is not None
        pid = service.process.pid
        base = f"http://127.0.0.1:{port}"
        settle(pid, args.settle)
        last = end - args.step
        options = FetchOptions(time_box=timedelta(minutes=5))
        if not args.no_fetch:
            wire_before = response_bytes(base)
            with Sampler(lambda: [psutil.Process(pid)]) as prometheus:
                cpu_before = cpu_seconds(pid)
                found = asyncio.run(fetch(base, start, last, args.step, options))
            prometheus.cpu[pid] -= cpu_before
            report_fetch(found, response_bytes(base) - wire_before, prometheus, pid)
        if not args.no_train:
            train(base, directory, args, last, pid)
        # A client that honours only the 11,000-points-per-series cap.
        try:
            uncapped = asyncio.run(
                fetch(
                    base,
                    start,
                    last,
                    args.step,
                    FetchOptions(samples_per_request=sys.maxsize, time_box=timedelta(minutes=5)),
                )
            )
            print(
                f"11,000-point windows without the sample budget: {uncapped['seconds']:.1f}s, "
                f"{uncapped['requests']:.0f} requests"
            )
        except PromQLError as exc:
            print(f"11,000-point windows without the sample budget: refused: {exc}")
    finally:
        service.stop(grace=10)
        if args.keep is None:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


def settle(pid: int, first: float, quiet: float = 1.0, period: float = 10.0) -> None:
    """Wait until Prometheus is idle: blocks loaded from a backfill get compacted first.

    The first compaction starts a minute after startup: ``first`` seconds of
    waiting cover it, then every ``period`` until less than ``quiet`` CPU seconds.
    """
    began = time.monotonic()
    limit = 1800.0
    time.sleep(first)
    while time.monotonic() - began < limit:
        before = cpu_seconds(pid)
        time.sleep(period)
        if cpu_seconds(pid) - before < quiet:
            break
    print(f"Prometheus idle {time.monotonic() - began:.0f}s after start (compaction)")


def train(base: str, directory: Path, args: argparse.Namespace, now: int, prometheus: int) -> None:
    """The sidecar's training path (a process of its own, as the scoring loop runs it)."""
    config = training_config(args.series, args.days, args.step)
    job = TrainingJob(
        prometheus_url=base,
        data_dir=directory / "models",
        config=config,
        signals=("bench",),
        now=float(now),
    )
    me = psutil.Process()
    cpu_before = cpu_seconds(prometheus)

    def training_processes() -> list[psutil.Process]:
        return [child for child in me.children(recursive=True) if child.pid != prometheus]

    began = time.monotonic()
    with (
        Sampler(training_processes) as trainer,
        Sampler(lambda: [psutil.Process(prometheus)]) as server,
    ):
        result = asyncio.run(TrainingProcess().run(job))
    wall = time.monotonic() - began
    if result.failed:
        print(f"training failed: {result.failed}")
        return
    meta = result.trained["bench"]
    assert meta is not None
    peaks = [*sorted(trainer.peaks.values(), reverse=True), 0, 0]
    points = round((meta.range_end - meta.range_start) / meta.step) + 1
    fit = meta.quality["fit_seconds"]
    print(
        f"trained {meta.series} series x {points} points: {wall:.1f}s wall (fetch and fit "
        f"interleaved; fit {fit:.1f}s of it), CPU {sum(trainer.cpu.values()):.1f}s "
        f"over {len(trainer.cpu)} processes"
    )
    server_cpu = server.cpu[prometheus] - cpu_before
    print(
        f"  peak RSS: training process {peaks[0] / 2**30:.2f} GiB, fit worker "
        f"{peaks[1] / 2**30:.2f} GiB, together {trainer.tree_peak / 2**30:.2f} GiB; "
        f"Prometheus CPU {server_cpu:.1f}s, peak RSS {server.peaks[prometheus] / 2**30:.2f} GiB"
    )


if __name__ == "__main__":
    sys.exit(main())
