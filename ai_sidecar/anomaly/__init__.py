"""Anomaly models: signals read from PromQL history, one detector for live scoring and the CLI.

The package follows the data: ``signals`` (what to model, from the config),
``history`` (range queries), ``detector`` (the scoring code the live loop and
``scout-sidecar anomaly score`` share), ``registry`` (trained versions on disk),
``drift`` and the scoring loop that exports scores and bands on ``/metrics``.
"""
