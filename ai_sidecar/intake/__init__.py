"""Intake: how alerts enter the sidecar besides the webhook's own handler.

:mod:`ai_sidecar.intake.reconcile` reads raw alerts back from the Alertmanager
peers and hands what the webhook never delivered to the pipeline.
:mod:`ai_sidecar.intake.processes` runs more HTTP processes on the webhook's
port (``--web.processes``), which pass every other request to the main one
(:mod:`ai_sidecar.intake.forward`).
"""

from ai_sidecar.intake.reconcile import RawAlertSource, Reconciler

__all__ = ["RawAlertSource", "Reconciler"]
