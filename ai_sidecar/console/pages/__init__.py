"""Incidents, an incident's page and its actions, anomalies, and the health banner.

- :mod:`.incidents`: ``/console/incidents`` (filters, paging) and
  ``/console/incidents/{id}``;
- :mod:`.actions`: the operator's POSTs on an incident (feedback,
  acknowledge, unacknowledge, assign, silence);
- :mod:`.silences`: silences through Alertmanager's API v2, on every peer;
- :mod:`.anomalies`: ``/console/anomalies``;
- :mod:`.preferences`: ``/console/preferences`` (the user's language);
- :mod:`ai_sidecar.console.health`: the banner every page shows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from ai_sidecar.components import promql_client
from ai_sidecar.console.health import setup_health
from ai_sidecar.console.pages import actions
from ai_sidecar.console.pages.actions import CLIENT, SUBMISSIONS, Submissions
from ai_sidecar.console.pages.anomalies import CHARTS, AnomalyCharts, anomalies
from ai_sidecar.console.pages.common import INCIDENTS_PATH
from ai_sidecar.console.pages.incidents import incident_list, incident_page
from ai_sidecar.console.pages.preferences import PREFERENCES_PATH, preferences, save_preferences
from ai_sidecar.graph_route import RenderedGraphs
from ai_sidecar.keys import CONFIG, SETTINGS
from ai_sidecar.models import INCIDENT_ID_SEGMENT
from ai_sidecar.notify.graphs import GraphSource


async def home(_: web.Request) -> web.Response:
    """The console's front door is the incident list."""
    raise web.HTTPSeeOther(INCIDENTS_PATH)


def setup_pages(app: web.Application) -> None:
    """Register /console/, /console/incidents, /console/incidents/{id}, /console/anomalies
    and /console/preferences."""
    setup_health(app)

    async def client(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            app[CLIENT] = session
            # Charts are drawn in the config's language, as the notifications' graphs.
            source = GraphSource(
                promql_client(app[SETTINGS], session),
                range=app[CONFIG].graphs.range,
                language=app[CONFIG].language,
            )
            app[CHARTS] = AnomalyCharts(source, RenderedGraphs())
            yield

    app.cleanup_ctx.append(client)
    app[SUBMISSIONS] = Submissions()
    app.router.add_get("/console/", home)
    app.router.add_get("/console", home)
    app.router.add_get(INCIDENTS_PATH, incident_list)
    incident = f"{INCIDENTS_PATH}/{INCIDENT_ID_SEGMENT}"
    app.router.add_get(incident, incident_page)
    app.router.add_post(incident + "/feedback", actions.give_feedback)
    app.router.add_post(incident + "/acknowledge", actions.acknowledge)
    app.router.add_post(incident + "/unacknowledge", actions.unacknowledge)
    app.router.add_post(incident + "/assign", actions.assign)
    app.router.add_post(incident + "/silence", actions.silence)
    app.router.add_get("/console/anomalies", anomalies)
    app.router.add_get(PREFERENCES_PATH, preferences)
    app.router.add_post(PREFERENCES_PATH, save_preferences)


__all__ = ["setup_pages"]
