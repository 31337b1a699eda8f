"""What both daemons share, and the only part of ``exporter`` the sidecar may import.

- :mod:`~exporter.common.yamlconfig`: strict YAML loading with line numbers;
- :mod:`~exporter.common.models`: the strict model base, secrets and regexes;
- :mod:`~exporter.common.logs`: structured logging (logfmt or JSON);
- :mod:`~exporter.common.web`: exposition rendering, health answers, listen addresses;
- :mod:`~exporter.common.webconfig`: ``--web.config.file`` (TLS, basic auth, headers)
  and the cross-site check for state-changing POSTs;
- :mod:`~exporter.common.version`: the installed version.

Nothing here imports from the rest of ``exporter``; ``tests/test_layering.py`` holds
the sidecar to this package.
"""
