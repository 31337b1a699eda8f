"""The one compiled part of Scout, optional: see exporter/clients/snmp/_speedups.c.

Everything else is in pyproject.toml. Without a C compiler (the slim container
image) the build skips it with a warning and the exporter runs the same Python
loops it would otherwise replace.
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
