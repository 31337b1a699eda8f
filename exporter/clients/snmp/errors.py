"""The SNMP client's exceptions. Messages name the agent, never a secret.

Tree::

    ExporterError
     └── SnmpError             the host does not resolve, the session is closed, ...
          ├── SnmpTimeout       no answer within timeout x (retries + 1), or the deadline passed
          ├── SnmpAuthError     a v3 report (unknown user, wrong digest, ...) or authorizationError
          ├── SnmpTooBig        tooBig even with max-repetitions 1 (or for a single-OID GET)
          └── SnmpProtocolError a malformed reply, an error-status, a walk that does not end
"""

from __future__ import annotations

from exporter.errors import ExporterError


class SnmpError(ExporterError):
    """Root of SNMP errors. Messages name the agent, never a secret."""


class SnmpTimeout(SnmpError):
    """The agent did not answer in time, or the caller's deadline passed."""


class SnmpAuthError(SnmpError):
    """An SNMPv3 agent rejected the credentials; the message names its report."""


class SnmpTooBig(SnmpError):
    """The agent answered tooBig even for the smallest request we can make."""


class SnmpProtocolError(SnmpError):
    """The agent's reply is malformed, carries an error-status, or a walk never ends."""
