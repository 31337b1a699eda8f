"""SNMP collection for ``/snmp``: modules as data, walks, mapping to snmp_exporter's names."""
