"""Notify: enriched copies of analysed incidents, posted back to every Alertmanager.

For each member of an analysed incident the sidecar posts a copy of the raw
alert to ``POST /api/v2/alerts`` on every Alertmanager peer, with the extra
labels ``scout_enriched="true"``, ``scout_incident`` and ``scout_priority``
and the analysis as ``ai_*`` annotations. Alertmanager notifies people of
these copies, grouped by incident, and an inhibition rule mutes the raw alert
while its copy fires (``alertmanager/alertmanager.yml``).

What must happen, and why:

* **Keep-alive.** A copy is posted with an explicit ``endsAt`` (now +
  ``keepalive``) and posted again every ``repost_interval``, well before it
  expires. If the sidecar dies, its copies expire on their own and the raw
  alerts, no longer inhibited, reach people: fail-open.
* **Resolution.** When a member or its incident resolves, the copy is posted
  with ``endsAt`` at the resolution time, and posted again every
  ``resolved_repeat_interval`` for ``resolved_repeat_for`` (a peer that was
  restarted or partitioned still learns of it), then forgotten.
* **A new label set is a new alert.** Alertmanager identifies an alert by its
  labels. When a copy's labels change (priority P3 → P1, a member moved to
  another incident) the old copy is resolved (``endsAt`` = now, repeated as
  above) and the new one posted; otherwise the old one would fire until it
  expired.
* **Durable.** Copies wait in the store's outbox, keyed by peer and by the
  copy's fingerprint as Alertmanager computes it.

The parts, by job:

- :mod:`.render`: the enriched copy of a member, and its fingerprint;
- :mod:`.wording`: the title, times and resolution people read first, in the
  words of :mod:`.phrases` (every phrase the sidecar writes for people);
- :mod:`.alertmanager`: the HTTP client (post, list raw alerts);
- :mod:`.poster`: :class:`ReturnTrip`, posting from the outbox with per-peer
  backoff;
- :mod:`.policy`: the timings, from the config's ``return_trip`` section.

Reading raw alerts back (reconciliation) is a second intake, in
:mod:`ai_sidecar.intake.reconcile`.
"""

from ai_sidecar.notify.alertmanager import (
    ALERTS_PATH,
    RAW_ALERTS_QUERY,
    AlertmanagerClient,
    Outcome,
    Reply,
)
from ai_sidecar.notify.policy import ReturnTripPolicy
from ai_sidecar.notify.poster import PostPermit, ReturnTrip
from ai_sidecar.notify.render import (
    analysis_annotations,
    console_url,
    enriched_alert,
    fingerprint,
    incident_annotations,
    incident_url,
    outbox_copies,
    postable,
)
from ai_sidecar.notify.wording import Wording

__all__ = [
    "ALERTS_PATH",
    "RAW_ALERTS_QUERY",
    "AlertmanagerClient",
    "Outcome",
    "PostPermit",
    "Reply",
    "ReturnTrip",
    "ReturnTripPolicy",
    "Wording",
    "analysis_annotations",
    "console_url",
    "enriched_alert",
    "fingerprint",
    "incident_annotations",
    "incident_url",
    "outbox_copies",
    "postable",
]
