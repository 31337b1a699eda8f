"""Multi-target endpoints (``/snmp``, ``/probe``, ...): one table of kinds, one handler.

``kind`` holds the seams (``TargetKind``, ``TargetScraper``, ``Exposition``),
``registry`` the table, ``handler`` the route every row gets, ``allowlist``
the ``allowed_targets`` of modules and auths and ``refusals`` the count of
targets they refused; each kind is a package here. This file imports nothing:
the config's models import the kinds' module types through this package, and
the table imports the config.
"""
