"""Correlation's graph: the dependency topology alerts are joined and ranked along.

The correlator itself still lives in :mod:`ai_sidecar.correlation`; this
package holds what it is given: a :class:`TopologySnapshot` (built by
:func:`build_snapshot`), the :class:`TopologyRefresher` that reads the
discovered part from Prometheus on a schedule, and the :class:`CoFiring`
edges learned from the store's incidents (:func:`learn_with`).
"""

from ai_sidecar.correlate.cofiring import CoFiring, learn, learn_with
from ai_sidecar.correlate.refresh import (
    TopologyMetrics,
    TopologyProvider,
    TopologyRefresher,
    configured_snapshot,
    create_topology_metrics,
)
from ai_sidecar.correlate.topology import (
    INTERFACE_LABELS,
    PATH,
    POLL,
    USES,
    Dependency,
    Poller,
    TopologySnapshot,
    build_snapshot,
    element_text,
)

__all__ = [
    "INTERFACE_LABELS",
    "PATH",
    "POLL",
    "USES",
    "CoFiring",
    "Dependency",
    "Poller",
    "TopologyMetrics",
    "TopologyProvider",
    "TopologyRefresher",
    "TopologySnapshot",
    "build_snapshot",
    "configured_snapshot",
    "create_topology_metrics",
    "element_text",
    "learn",
    "learn_with",
]
