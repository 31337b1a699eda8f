"""The firewall scrape benchmark reads one FortiGate both ways (benchmarks/firewall_scrape.py)."""

from __future__ import annotations

from benchmarks import firewall_scrape


def test_the_snmp_device_is_the_fortigate_with_its_interfaces(tmp_path):
    path = tmp_path / "fortigate.snmprec"
    firewall_scrape.write_fortigate_device(path, 4)
    lines = path.read_text().splitlines()
    oids = [tuple(map(int, line.split("|", 1)[0].split("."))) for line in lines]
    assert oids == sorted(set(oids))  # snmpsim looks records up in OID order
    assert "1.3.6.1.4.1.12356.101.4.1.8.0|66|51234" in lines  # fgSysSesCount, recorded
    assert "1.3.6.1.4.1.12356.101.13.1.1.0|2|3" in lines  # fgHaSystemMode a-p
    assert sum(line.startswith("1.3.6.1.2.1.2.2.1.2.") for line in lines) == 4  # ifDescr rows
    assert sum(line.startswith("1.3.6.1.2.1.1.3.0|") for line in lines) == 1  # one sysUpTime


def test_the_snmp_side_reads_the_firewall_schema_by_default():
    args = firewall_scrape.parse_args([])
    assert args.snmp_modules.split(",") == ["if_mib", "fortigate"]
