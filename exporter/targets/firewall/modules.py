"""The ``/firewall`` module types, one per vendor API, and the modules built in for each.

A config's ``modules:`` entry is a firewall module when its ``prober:`` is
``fortigate``, ``opnsense`` or ``pfsense``; ``exporter.config`` takes the union
from here, and so does the ``/firewall`` row of the table of kinds. With no
config file, ``module=fortigate`` (and the other two) read with the defaults
below: HTTPS on the vendor's usual port, the certificate verified against the
system's authorities.

Example::

    modules:
      fortigate_hq:
        prober: fortigate
        vdom: root
        tls_ca_file: /etc/scout/fortigate-ca.pem   # the firewall's own CA
        max_rule_series: 200
      opnsense_lab:
        prober: opnsense
        port: 8443
        tls_insecure_skip_verify: true           # a self-signed lab box: opt out, knowingly
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field

from exporter.common.models import StrictModel
from exporter.targets.allowlist import AllowedTargets
from exporter.targets.probe.base import CaFile

# Enough for the policy statistics of a few thousand rules; a bigger answer is refused.
DEFAULT_MAX_RESPONSE_BYTES = 8 << 20


class FirewallModule(StrictModel):
    """What every vendor's module has: where the API listens, TLS, and the rule budget."""

    prober: str
    # https unless the API is reached through something that adds TLS itself.
    scheme: Literal["https", "http"] = "https"
    # None: 443 for https, 80 for http. A target's own :port wins.
    port: int | None = Field(default=None, ge=1, le=65535)
    # Verification is on unless switched off here, by name.
    tls_insecure_skip_verify: bool = False
    # PEM authorities to trust besides the system's (a firewall's self-signed CA).
    tls_ca_file: CaFile | None = None
    # The name the certificate must carry when the target is an address.
    tls_server_name: str | None = Field(default=None, min_length=1, max_length=253)
    # Rule series: named rules by default, every rule on opt-in, at most max_rule_series.
    all_rules: bool = False
    max_rule_series: int = Field(default=500, ge=0, le=100_000)
    # Each answer is read up to this many bytes; a longer one fails that request.
    max_response_bytes: int = Field(default=DEFAULT_MAX_RESPONSE_BYTES, ge=1 << 16, le=1 << 28)
    # The targets this module may read (see exporter.targets.allowlist); None: any.
    allowed_targets: AllowedTargets | None = None

    @property
    def default_port(self) -> int:
        return self.port or (443 if self.scheme == "https" else 80)


class FortiGateModule(FirewallModule):
    """FortiOS's REST API (monitor and cmdb), with a REST API administrator's token."""

    prober: Literal["fortigate"] = "fortigate"
    # The VDOM whose policies, interfaces, tunnels and SD-WAN checks are read.
    vdom: str = Field(default="root", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


class OPNsenseModule(FirewallModule):
    """OPNsense's API, with an API key and secret (HTTP basic auth)."""

    prober: Literal["opnsense"] = "opnsense"


class PfSenseModule(FirewallModule):
    """The pfSense REST API package (v2), with its X-API-Key (or basic auth, or a JWT)."""

    prober: Literal["pfsense"] = "pfsense"


FirewallModuleType = FortiGateModule | OPNsenseModule | PfSenseModule
FIREWALL_MODULE_TYPES: tuple[type[FirewallModuleType], ...] = get_args(FirewallModuleType)


def default_modules() -> dict[str, FirewallModuleType]:
    """Usable with no config file: /firewall?module=fortigate&target=...&auth=..."""
    return {module_type().prober: module_type() for module_type in FIREWALL_MODULE_TYPES}
