"""Intake: how alerts enter the sidecar besides the webhook.

:mod:`ai_sidecar.intake.reconcile` reads raw alerts back from the Alertmanager
peers and hands what the webhook never delivered to the pipeline.
"""

from ai_sidecar.intake.reconcile import RawAlertSource, Reconciler

__all__ = ["RawAlertSource", "Reconciler"]
