"""History fetch for the anomaly models: N series x D days from a real Prometheus.

What training a signal costs before the detector sees a point: the range
queries of :func:`ai_sidecar.anomaly.history.fetch_history` (windows sized so
no request passes 11,000 points per series nor about a million samples, two
in flight, each time-boxed and retried), the JSON they carry and the
(series x points) matrix they fill.

The script backfills ``--series`` gauge series of ``--days`` days at
``--step`` seconds into a Prometheus of its own (``promtool tsdb
create-blocks-from openmetrics``, one file per day, each deleted once turned
into blocks), starts it on a free loopback port, fetches the whole history the
way the trainer does and reports: wall time, requests, bytes of JSON the
client decoded (after aiohttp undid Prometheus's gzip; the compressed size on
the wire is not measured), the matrix's shape and size, the client's peak
resident memory and Prometheus's CPU.

It also asks Prometheus for the same history in windows of 11,000 points
without the sample budget, as a client that only honours the per-series cap
would: the reason the budget exists.

Usage: python -m benchmarks.anomaly_history [--series 10000] [--days 14] [--step 60]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import resource
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import aiohttp
import numpy as np

from ai_sidecar.anomaly.history import FetchOptions, fetch_history
from ai_sidecar.promql import HttpPromQLClient, PromQLError
from benchmarks.common import cpu_seconds, version_line
from scripts.localstack import find_binary, free_port, prometheus_service
from tests.peers.history import backfill as create_blocks

METRIC = "scout_bench_load"
DAY = 86_400


def write_day(path: Path, series: int, first: int, last: int, step: int, seed: int) -> int:
    """One day of every series as OpenMetrics text; the number of samples written."""
    times = np.arange(first, last, step)
    rng = np.random.default_rng(seed)
    base = rng.uniform(10, 1000, series)
    wave = np.sin(2 * math.pi * (times % DAY) / DAY)
    with path.open("w") as out:
        out.write(f"# TYPE {METRIC} gauge\n")
        for index in range(series):
            values = base[index] * (1 + 0.3 * wave) + rng.normal(0, base[index] * 0.02, times.size)
            labels = f'{{job="bench",instance="s{index:05d}"}}'
            out.write(
                "".join(
                    f"{METRIC}{labels} {v:.3f} {t}\n" for v, t in zip(values, times, strict=True)
                )
            )
        out.write("# EOF\n")
    return int(times.size) * series


def backfill(directory: Path, series: int, days: int, step: int, end: int) -> float:
    began = time.monotonic()
    start = end - days * DAY
    for day in range(days):
        path = directory / f"day-{day}.om"
        first = start + day * DAY
        write_day(path, series, first, first + DAY, step, seed=day)
        create_blocks(path, directory / "prometheus")
        path.unlink()
        print(f"  day {day + 1}/{days} backfilled ({time.monotonic() - began:.0f}s)", flush=True)
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


async def fetch(
    base: str, start: int, end: int, step: int, options: FetchOptions
) -> dict[str, float]:
    counted = Bytes()
    began = time.monotonic()
    async with aiohttp.ClientSession(trace_configs=[counted.trace()]) as session:
        client = HttpPromQLClient(base, session)
        history = await fetch_history(
            client,
            METRIC,
            start=start,
            end=end,
            step=step,
            keep_labels=["job", "instance"],
            max_series=1_000_000,
            options=options,
        )
    seconds = time.monotonic() - began
    return {
        "seconds": seconds,
        "requests": history.requests,
        "series": len(history.keys),
        "points": history.timestamps.size,
        "missing": float(np.count_nonzero(np.isnan(history.values))),
        "matrix_bytes": history.values.nbytes,
        "decoded_bytes": counted.decoded,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--step", type=int, default=60)
    parser.add_argument("--keep", type=Path, help="reuse (or fill) this directory's blocks")
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
        print(f"backfilled in {backfill(directory, args.series, args.days, args.step, end):.0f}s")
    config = directory / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1m}\n")
    port = free_port()
    service = prometheus_service(config, directory, port, ["--storage.tsdb.retention.time=400d"])
    service.start()
    try:
        service.wait_ready(timeout=300)
        assert service.process is not None
        base = f"http://127.0.0.1:{port}"
        cpu_before = cpu_seconds(service.process.pid)
        last = end - args.step
        found = asyncio.run(
            fetch(base, start, last, args.step, FetchOptions(time_box=timedelta(minutes=5)))
        )
        prometheus_cpu = cpu_seconds(service.process.pid) - cpu_before
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        samples = found["series"] * found["points"]
        print(
            f"fetched {found['series']:.0f} series x {found['points']:.0f} points "
            f"in {found['seconds']:.1f}s ({samples / found['seconds'] / 1e6:.2f} M samples/s), "
            f"{found['requests']:.0f} requests"
        )
        print(
            f"  JSON decoded {found['decoded_bytes'] / 1e9:.2f} GB "
            f"({found['decoded_bytes'] / samples:.1f} B/sample)"
        )
        print(
            f"  matrix {found['matrix_bytes'] / 1e9:.2f} GB, "
            f"missing points {found['missing']:.0f}; client peak RSS {peak / 1e9:.2f} GB; "
            f"Prometheus CPU {prometheus_cpu:.1f}s"
        )
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


if __name__ == "__main__":
    sys.exit(main())
