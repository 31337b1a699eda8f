"""``/firewall``: FortiGate, OPNsense and pfSense through their REST APIs, in one schema.

``modules`` holds the module types (``prober: fortigate|opnsense|pfsense``),
``scraper`` the kind's ``TargetScraper`` and target syntax, and one module per
vendor (``fortigate``, ``opnsense``, ``pfsense``) the endpoints it reads and
how their answers map to ``exporter.schema.firewall``.
"""
