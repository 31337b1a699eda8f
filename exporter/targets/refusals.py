"""Targets the allow-lists refused: a counter for ``/metrics`` and a log line that keeps quiet.

Sample exposition (the metric contract)::

    # HELP scout_exporter_target_refused_total Targets refused by an allow-list.
    # TYPE scout_exporter_target_refused_total counter
    scout_exporter_target_refused_total{allow_list="modules.api_health",endpoint="probe"} 3.0

``allow_list`` names the list that refused (``modules.NAME`` or ``auths.NAME``),
so its values are bounded by the config. A refusal is logged the first time a
host is refused by a list and then at most once every ``LOG_EVERY_SECONDS``
per pair (``LOG_MEMORY`` pairs at most are remembered), and never more than
``LOG_BURST`` lines a minute in all: a caller sweeping addresses must not flood
the log. The next line logged says how many were left out.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.targets.allowlist import TargetRefusedError

log = logging.getLogger(__name__)

LOG_EVERY_SECONDS = 600.0
LOG_MEMORY = 1024
LOG_BURST = 20


class TargetRefusals:
    """Counts refusals per endpoint and list, and logs them at a rate limit."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._counts: Counter[tuple[str, str]] = Counter()
        self._logged: dict[tuple[str, str], float] = {}
        self._minute = 0.0
        self._lines_this_minute = 0
        self._left_out = 0

    def record(self, endpoint: str, refusal: TargetRefusedError) -> None:
        self._counts[endpoint, refusal.allow_list] += 1
        key = (refusal.allow_list, refusal.host)
        now = self._clock()
        last = self._logged.get(key)
        if last is not None and now - last < LOG_EVERY_SECONDS:
            return
        if now - self._minute >= 60.0:
            self._minute, self._lines_this_minute = now, 0
        if self._lines_this_minute >= LOG_BURST:
            self._left_out += 1
            return
        self._lines_this_minute += 1
        self._logged.pop(key, None)
        if len(self._logged) >= LOG_MEMORY:
            del self._logged[next(iter(self._logged))]  # the least recently logged
        self._logged[key] = now
        left_out, self._left_out = self._left_out, 0
        log.warning(
            "refused: %s%s",
            refusal,
            f" ({left_out} more refusals were not logged)" if left_out else "",
            extra={"target": refusal.host, "endpoint": endpoint, "allow_list": refusal.allow_list},
        )

    def families(self) -> list[Metric]:
        family = CounterMetricFamily(
            "scout_exporter_target_refused",
            "Targets refused by an allow-list.",
            labels=["endpoint", "allow_list"],
        )
        for (endpoint, allow_list), count in sorted(self._counts.items()):
            family.add_metric([endpoint, allow_list], count)
        return [family]
