"""Correlation's graph: the dependency topology alerts are joined and ranked along.

The correlator itself still lives in :mod:`ai_sidecar.correlation`; this
package holds what it is given: :class:`TopologySnapshot` (built by
:func:`build_snapshot`) and the refresher that reads the discovered part from
Prometheus.
"""

from ai_sidecar.correlate.topology import (
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
    "PATH",
    "POLL",
    "USES",
    "Dependency",
    "Poller",
    "TopologySnapshot",
    "build_snapshot",
    "element_text",
]
