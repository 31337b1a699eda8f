"""The one compiled part of Scout, optional: see exporter/clients/snmp/_speedups.c.

Everything else is in pyproject.toml. Without a C compiler or Python's headers
the build skips it with a warning and the exporter runs the same Python loops it
would otherwise replace (the Makefile installs gcc and the headers first; the
container image installs gcc for the build and removes it after).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "exporter.clients.snmp._speedups",
            ["exporter/clients/snmp/_speedups.c"],
            optional=True,
        )
    ]
)
