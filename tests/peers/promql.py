"""Real PromQL engines holding days of history, for tests and benchmarks.

Prometheus reads blocks ``promtool tsdb create-blocks-from openmetrics`` makes
before it starts, one input file per day (the tool's cost grows with the
square of a file's length). VictoriaMetrics takes the same samples through
its import API.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from scripts.localstack import Service, free_port, prometheus_service
from tests.peers import history

# (metric, labels, value, Unix seconds)
Sample = tuple[str, Mapping[str, str], float, int]
DAY = 86_400


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def backfill(directory: Path, samples: Iterable[Sample]) -> Path:
    """Blocks for Prometheus under ``directory/prometheus``, from one file per day."""
    by_day: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for metric, labels, value, at in samples:
        by_day[at // DAY][metric].append(f"{metric}{_labels(labels)} {value!r} {at}")
    inputs = directory / "openmetrics"
    inputs.mkdir(parents=True, exist_ok=True)
    for day, metrics in sorted(by_day.items()):
        lines: list[str] = []
        for metric, rows in metrics.items():
            lines += [f"# TYPE {metric} gauge", *rows]
        path = inputs / f"{day}.om"
        path.write_text("\n".join([*lines, "# EOF", ""]))
        history.backfill(path, directory / "prometheus")
    return directory / "prometheus"


def start_prometheus(
    directory: Path,
    scrape_configs: Sequence[Mapping[str, Any]] = (),
    scrape_interval: str = "1m",
    *,
    rule_files: Sequence[Path] = (),
    evaluation_interval: str = "1m",
) -> tuple[Service, str]:
    """Prometheus on the backfilled blocks (kept 400 days), scraping ``scrape_configs``
    and evaluating ``rule_files`` every ``evaluation_interval``."""
    config = directory / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": scrape_interval,
                    "evaluation_interval": evaluation_interval,
                },
                "rule_files": [str(path) for path in rule_files],
                "scrape_configs": list(scrape_configs),
            }
        )
    )
    port = free_port()
    service = prometheus_service(config, directory, port, ["--storage.tsdb.retention.time=400d"])
    return service, f"http://127.0.0.1:{port}"


def import_into_victoria_metrics(base: str, samples: Iterable[Sample]) -> None:
    text = "".join(
        f"{metric}{_labels(labels)} {value!r} {at * 1000}\n"
        for metric, labels, value, at in samples
    )
    history.import_into_victoria_metrics(base, text)


@contextmanager
def engine_holding(
    engine: str, directory: Path, samples: Callable[[], Iterable[Sample]]
) -> Iterator[str]:
    """``engine`` ("prometheus" or "victoria-metrics") holding ``samples()``, running
    until the block ends: Prometheus on blocks backfilled before it starts,
    VictoriaMetrics through its import API once it is up. Yields its URL."""
    if engine == "prometheus":
        backfill(directory, samples())
        service, url = start_prometheus(directory)
    else:
        service, url = history.victoria_metrics_service(directory)
    service.start()
    try:
        service.wait_ready()
        if engine != "prometheus":
            import_into_victoria_metrics(url, samples())
        yield url
    finally:
        service.stop(grace=5)
