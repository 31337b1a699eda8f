"""Multi-target endpoints (``/snmp``, ``/probe``, ...): one registry of kinds, one handler."""
