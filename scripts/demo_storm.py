"""Post a realistic alert storm to the local stack's Alertmanager (``make demo``).

The storm is what Prometheus would send, with the shipped rules' names and
labels (``prometheus/rules/``), when the uplink of the head office's core
switch goes down: the port itself (``InterfaceDown``), the access switches
behind it stop answering SNMP (``SnmpDeviceUnreachable``), and the access
points and servers behind those stop answering probes
(``ProbeTargetUnreachable``, ``ProbeFailed``). A few unrelated alerts at a
branch office fire alongside, as they do on any day. The sidecar turns the
storm into one incident (the head office's, ranked P2) and the background
alerts into incidents of their own.

Alerts are posted with ``endsAt`` an hour ahead (``--hold``), since no
Prometheus resends them: they stay open that long, then resolve by themselves.
The branch office's alerts started hours ago, past the fail-open delay, which
Alertmanager counts from ``startsAt``: they reach Slack raw ("not analysed by
Scout") at once, before their enriched copies (README, "What the 2 minutes
count from").

Typical use, with ``make up`` running in another terminal::

    make demo        # or: .venv/bin/python scripts/demo_storm.py [--alertmanager-port ...]

It waits until the sidecar shows the incidents, then prints where to look.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Standalone (no import of localstack.py): mypy checks scripts/ as top-level modules.
REPO = Path(__file__).resolve().parent.parent

RUNBOOKS = "https://github.com/scout-monitoring/scout/blob/main/docs/runbooks.md"
# The head office: core switch, two access switches, their access points and servers.
SITE = "hq"
CORE = "core-sw1"
UPLINK = {"ifName": "Te1/0/1", "ifIndex": "10101", "ifAlias": "uplink to dist-sw1"}


class DemoError(Exception):
    """The demo cannot run; the message says what to do."""


def _alert(
    labels: dict[str, str], summary: str, anchor: str, starts_at: datetime, ends_at: datetime
) -> dict[str, Any]:
    """One alert as Prometheus posts it to ``POST /api/v2/alerts``."""
    return {
        "labels": labels,
        "annotations": {"summary": summary, "runbook_url": f"{RUNBOOKS}#{anchor}"},
        "startsAt": starts_at.isoformat().replace("+00:00", "Z"),
        "endsAt": ends_at.isoformat().replace("+00:00", "Z"),
    }


def storm(now: datetime, hold: timedelta = timedelta(hours=1)) -> list[dict[str, Any]]:
    """The core-uplink storm and the background alerts, starting shortly before ``now``.

    The times follow the rules' ``for:`` delays as measured on real storms: the
    probes (3m) fire about when the port does (2m), the SNMP-unreachable
    switches (3m) a little after.
    """
    ends = now + hold
    down = now - timedelta(seconds=90)

    def after(seconds: int) -> datetime:
        return down + timedelta(seconds=seconds)

    alerts = [
        _alert(
            {
                "alertname": "InterfaceDown",
                "severity": "warning",
                "job": "snmp",
                "instance": CORE,
                "site": SITE,
                **UPLINK,
            },
            f"Interface {UPLINK['ifName']} down on {CORE}",
            "interfacedown",
            after(0),
            ends,
        )
    ]
    switches = {"access-sw1": ["ap-1f-01", "ap-1f-02"], "access-sw2": ["ap-2f-01"]}
    for offset, (switch, access_points) in enumerate(switches.items()):
        alerts.append(
            _alert(
                {
                    "alertname": "SnmpDeviceUnreachable",
                    "severity": "critical",
                    "layer": "device",
                    "job": "snmp",
                    "instance": switch,
                    "site": SITE,
                    "upstream": CORE,
                },
                f"{switch} does not answer SNMP",
                "snmpdeviceunreachable",
                after(20 + offset),
                ends,
            )
        )
        for n, access_point in enumerate(access_points):
            alerts.append(
                _alert(
                    {
                        "alertname": "ProbeTargetUnreachable",
                        "severity": "critical",
                        "layer": "device",
                        "job": "probe_icmp",
                        "instance": access_point,
                        "site": SITE,
                        "upstream": switch,
                    },
                    f"{access_point} unreachable",
                    "probetargetunreachable",
                    after(5 + offset * 3 + n),
                    ends,
                )
            )
    for n, server in enumerate(("srv-files1", "srv-print1")):
        alerts.append(
            _alert(
                {
                    "alertname": "ProbeTargetUnreachable",
                    "severity": "critical",
                    "layer": "device",
                    "job": "probe_icmp",
                    "instance": server,
                    "site": SITE,
                    "upstream": "access-sw2",
                },
                f"{server} unreachable",
                "probetargetunreachable",
                after(8 + n),
                ends,
            )
        )
    alerts.append(
        _alert(
            {
                "alertname": "ProbeFailed",
                "severity": "critical",
                "job": "probe_http",
                "instance": "https://intranet.hq.example",
                "site": SITE,
                "upstream": "access-sw2",
            },
            "Probe of https://intranet.hq.example failing",
            "probefailed",
            after(30),
            ends,
        )
    )
    return alerts + background(now, ends)


def background(now: datetime, ends: datetime) -> list[dict[str, Any]]:
    """A branch office's own troubles, hours old and unrelated to the storm."""
    earlier = now - timedelta(hours=3)
    return [
        _alert(
            {
                "alertname": "HostFilesystemAlmostFull",
                "severity": "warning",
                "job": "node",
                "instance": "backup1",
                "site": "branch",
                "mountpoint": "/var/backups",
            },
            "Filesystem /var/backups almost full on backup1",
            "hostfilesystemalmostfull",
            earlier,
            ends,
        ),
        _alert(
            {
                "alertname": "InterfaceErrors",
                "severity": "warning",
                "job": "snmp",
                "instance": "branch-sw1",
                "site": "branch",
                "ifName": "Gi1/0/24",
                "ifIndex": "10124",
                "ifAlias": "printer room",
            },
            "Errors on interface Gi1/0/24 of branch-sw1",
            "interfaceerrors",
            earlier + timedelta(minutes=40),
            ends,
        ),
        _alert(
            {
                "alertname": "ProbeLatencyHigh",
                "severity": "warning",
                "job": "probe_icmp",
                "instance": "vpn-gw.branch.example",
                "site": "branch",
            },
            "Latency high to vpn-gw.branch.example",
            "probelatencyhigh",
            earlier + timedelta(minutes=75),
            ends,
        ),
    ]


def ready(base_url: str) -> bool:
    """Whether a Prometheus-style ``/-/ready`` answers 200 at ``base_url``."""
    try:
        with urllib.request.urlopen(f"{base_url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def post_alerts(alertmanager_url: str, alerts: Sequence[dict[str, Any]]) -> None:
    """``POST /api/v2/alerts`` as Prometheus does; DemoError with Alertmanager's answer."""
    request = urllib.request.Request(
        alertmanager_url.rstrip("/") + "/api/v2/alerts",
        data=json.dumps(list(alerts)).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10):
            return
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise DemoError(f"Alertmanager refused the alerts ({exc.code}): {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DemoError(f"cannot reach Alertmanager at {alertmanager_url}: {exc}") from None


def incidents_with(
    sidecar_url: str, token: str, alerts: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The sidecar's incidents that hold any of ``alerts`` (matched on their labels)."""
    request = urllib.request.Request(
        sidecar_url.rstrip("/") + "/api/v1/incidents",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            incidents: list[dict[str, Any]] = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return []
    return holding(incidents, alerts)


def holding(
    incidents: Sequence[dict[str, Any]], alerts: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The ``incidents`` (as the API lists them) where any of ``alerts`` is firing now.

    Firing only: an earlier demo's alerts carry the same labels, and its resolved
    incidents must not pass for this run's (nor make the wait end at once)."""
    wanted = [a["labels"] for a in alerts]
    return [
        i
        for i in incidents
        if any(m["status"] == "firing" and m["labels"] in wanted for m in i["alerts"])
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alertmanager-port", type=int, default=9093)
    parser.add_argument("--sidecar-port", type=int, default=8782)
    parser.add_argument("--data-dir", type=Path, default=REPO / ".stack")
    parser.add_argument(
        "--hold",
        type=int,
        default=60,
        metavar="MINUTES",
        help="how long the alerts stay open before they resolve (default 60)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the incidents to show in the sidecar (default 60; 0: no wait)",
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    alertmanager = f"http://127.0.0.1:{args.alertmanager_port}"
    sidecar = f"http://127.0.0.1:{args.sidecar_port}"
    if not ready(alertmanager):
        raise DemoError(
            f"no Alertmanager answers at {alertmanager}: start the stack with `make up` "
            "first (in another terminal), with the same ALERTMANAGER_PORT"
        )
    if not ready(sidecar):
        raise DemoError(
            f"no Scout sidecar answers at {sidecar}: start the stack with `make up` "
            "first, with the same SIDECAR_PORT"
        )
    alerts = storm(datetime.now(UTC), timedelta(minutes=args.hold))
    post_alerts(alertmanager, alerts)
    print(
        f"posted {len(alerts)} alerts to {alertmanager}: {CORE}'s uplink "
        f"{UPLINK['ifName']} down at site {SITE} (switches, access points and servers "
        f"behind it unreachable), and unrelated alerts at site branch; "
        f"they resolve in {args.hold} min"
    )
    token_file = args.data_dir / "secrets" / "webhook-token"
    if args.wait > 0 and token_file.exists():
        token = token_file.read_text().strip()
        deadline = time.monotonic() + args.wait
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = incidents_with(sidecar, token, alerts)
            if sum(len(i["alerts"]) for i in found) >= len(alerts):
                break
            time.sleep(1)
        if not found:
            raise DemoError(
                f"the sidecar shows no incident from the demo after {args.wait:.0f}s: "
                f"see {args.data_dir / 'logs'} (alertmanager.log, scout-sidecar.log)"
            )
        print(f"the sidecar grouped them into {len(found)} incidents")
    print(f"see them at {sidecar}/console/incidents")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
