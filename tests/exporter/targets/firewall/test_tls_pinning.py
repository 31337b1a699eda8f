"""Two firewall names pinned to one address never share a TLS connection.

A name is connected to at the address its allow-list checked, with the name
as SNI and as the name the certificate must carry. Two names behind one
address (an SNI-routing proxy, a NAT) must each get their own handshake:
reusing the first name's connection would send the second firewall's
credentials to wherever the first SNI led, over a certificate never checked
for the second name.
"""

from __future__ import annotations

import ipaddress
import ssl

from cryptography import x509

from exporter.clients import probe_net
from exporter.targets import allowlist
from tests.exporter.certs import CertificateAuthority
from tests.exporter.targets.firewall.exposition import scrape, value


def fake_lookup(answers: dict[str, str]):
    async def lookup(host: str, deadline: float | None = None):
        if host not in answers:
            raise probe_net.ResolveError(f"cannot resolve {host!r}")
        return [ipaddress.ip_address(answers[host])]

    return lookup


async def test_each_pinned_name_gets_its_own_handshake(start_fake, scout, monkeypatch, tmp_path):
    names = {"fw-a.test": "127.0.0.1", "fw-b.test": "127.0.0.1"}
    monkeypatch.setattr(allowlist, "lookup", fake_lookup(names))
    ca = CertificateAuthority(tmp_path, "pinning-ca")
    leaf = ca.issue("fortigate", server=True, sans=[x509.DNSName(name) for name in names])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(leaf.cert, leaf.key)
    handshakes: list[str | None] = []
    context.sni_callback = lambda _socket, name, _context: handshakes.append(name)
    fake = await start_fake("fortigate", context)
    client = await scout(f'  fortigate_ca: {{prober: fortigate, tls_ca_file: "{ca.pair.cert}"}}\n')
    for name in names:
        _, text = await scrape(client, "fortigate_ca", f"{name}:{fake.port}", "fgt_by_name")
        assert value(text, "scout_firewall_up") == 1
    assert set(handshakes) == set(names)
