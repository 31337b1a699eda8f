"""Hand-written ``.snmprec`` recordings served by snmpsim, and ``/snmp`` scrapes of them.

Each recording is a device whose community is its file name; the tests of the
neighbour and firewall modules share how they are served, named in a config's
``auths:`` and scraped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.peers.snmp import SnmpsimDevices


@contextmanager
def served(
    tmp_path_factory: pytest.TempPathFactory, recordings: Sequence[Path]
) -> Iterator[SnmpsimDevices]:
    """snmpsim serving ``recordings`` and nothing else."""
    with SnmpsimDevices(
        tmp_path_factory.mktemp("snmpsim"), devices={}, recordings=recordings
    ) as devices:
        yield devices


def recording_auths(recordings: Sequence[Path]) -> str:
    """A config's ``auths:`` mapping, flow style: one v2c auth per recording, on loopback."""
    auths = ", ".join(
        f"{r.stem}: {{type: snmp, community: {r.stem}, allowed_targets: [127.0.0.0/8]}}"
        for r in recordings
    )
    return f"{{{auths}}}"


async def scrape(client: TestClient, target: str, auth: str, module: str) -> str:
    """``/snmp`` of ``target`` as Prometheus asks for it; the text of a 200."""
    response = await client.get(
        "/snmp",
        params={"target": target, "auth": auth, "module": module},
        headers={"X-Prometheus-Scrape-Timeout-Seconds": "10"},
    )
    assert response.status == 200
    return str(await response.text())
