"""The graph in every notification: a PNG of the root-cause member's series.

What is drawn, for an incident's root-cause member (or its first member):

* its expression's value side (as :mod:`ai_sidecar.context` queries it: the
  ``g0.expr`` of the generator URL, ``up`` for ``up == 0``) over the last
  ``graphs.range``, narrowed to the series whose labels agree with the
  alert's, at most :data:`MAX_LINES` lines of at most about
  :data:`MAX_POINTS` points;
* the anomaly band, when there is one for the member: for an alert about a
  scored series (it carries a ``signal`` label, like ``AnomalyDetected``)
  the series as the detector saw it (``scout_anomaly_observed``) between
  ``scout_anomaly_lower`` and ``scout_anomaly_upper`` replaces the
  expression, whose value is only a score; for any other member the
  incident's anomaly evidence for it, if any, gets a second panel (the band
  is in the signal's units, not the alert's, so it never shares an axis).

The title names the alert and its target; times are UTC. Captions and
messages are in the graph's language (the config's ``language``, through the
``notify`` catalogue; names and queries as they are). When there is no
expression, no data or no Prometheus, the PNG says so in words: an image link
in a notification never breaks.

Rendering uses matplotlib's object API on a :class:`~matplotlib.figure.Figure`
with the Agg canvas, never ``pyplot`` and its global state, so renders may run
on worker threads (:func:`render_graph` hands them to one). matplotlib is
imported by the first render, not with this module.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from babel.dates import format_date
from babel.numbers import format_decimal

from ai_sidecar.anomaly.evidence import LOWER, UPPER, evidence_subject
from ai_sidecar.clock import utc_now
from ai_sidecar.context import expression_of, value_expression
from ai_sidecar.i18n import SOURCE_LANGUAGE, Translator, translator
from ai_sidecar.models import Incident, Member
from ai_sidecar.notify.wording import member_what
from ai_sidecar.promql import PromQLClient, PromQLError, Series

if TYPE_CHECKING:  # imported on the first render: matplotlib takes a second to load
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

OBSERVED = "scout_anomaly_observed"
MAX_LINES = 8
MAX_POINTS = 400
MIN_STEP = timedelta(seconds=15)
TIME_BOX = timedelta(seconds=5)
# Slack shows an attachment's image at up to 400 px wide; a 2:1 picture at
# 100 dpi stays legible there and sharp when opened.
SIZE_INCHES = (8.0, 4.0)
DPI = 100
MAX_TITLE = 90
MAX_LEGEND = 60
# Spacings of the time axis' ticks, in seconds: the first that gives at most
# MAX_TICKS ticks over the range is used.
TICK_SPACINGS = (60, 300, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 7 * 86400)
MAX_TICKS = 8


@dataclass(frozen=True, slots=True)
class Panel:
    """One plot: its lines and, when a model has one, the band between lower and upper."""

    title: str
    lines: tuple[Series, ...]
    lower: Series | None = None
    upper: Series | None = None
    omitted: int = 0


@dataclass(frozen=True, slots=True)
class GraphData:
    """What one incident's graph shows; ``message`` instead of panels when there is no data."""

    title: str
    start: datetime
    end: datetime
    panels: tuple[Panel, ...] = ()
    message: str = ""
    # The language of its captions (and the dates of its time axis).
    language: str = SOURCE_LANGUAGE


def root_member(incident: Incident) -> Member | None:
    """The member the graph is about: the root cause, else the first firing, else any."""
    if incident.root_cause is not None and incident.root_cause in incident.members:
        return incident.members[incident.root_cause]
    members = incident.firing or tuple(incident.members.values())
    return members[0] if members else None


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _agrees(series: Mapping[str, str], reference: Mapping[str, str]) -> bool:
    """Every label both carry (bar the metric name) has the same value."""
    return all(
        reference[name] == value
        for name, value in series.items()
        if name != "__name__" and name in reference
    )


def _selector(labels: Mapping[str, str], names: Sequence[str]) -> str:
    """PromQL equality matchers for ``names`` that ``labels`` carries.

    JSON's string escapes are a subset of PromQL's, so a label value with
    quotes or a newline stays one string.
    """
    return ",".join(
        f"{name}={json.dumps(labels[name], ensure_ascii=False)}"
        for name in names
        if labels.get(name)
    )


def _step(span: timedelta) -> timedelta:
    return max(MIN_STEP, timedelta(seconds=math.ceil(span.total_seconds() / MAX_POINTS)))


def _legend(labels: Mapping[str, str], common: Mapping[str, str]) -> str:
    """The labels that tell this line from the others; the metric name if none do."""
    own = {k: v for k, v in labels.items() if common.get(k) != v and k != "__name__"}
    text = ", ".join(f"{k}={v}" for k, v in sorted(own.items()))
    return _short(text or labels.get("__name__", "value"), MAX_LEGEND)


class GraphSource:
    """Reads what an incident's graph shows from Prometheus, through a PromQL client.

    ``client`` None (``SCOUT_PROMETHEUS_URL`` unset): every graph says so.
    Never raises for Prometheus trouble: the data carries a message instead.
    """

    def __init__(
        self,
        client: PromQLClient | None,
        *,
        range: timedelta,  # the PromQL name for it, shadowing the builtin here only
        clock: Callable[[], datetime] = utc_now,
        time_box: timedelta = TIME_BOX,
        language: str = SOURCE_LANGUAGE,
    ) -> None:
        self._client = client
        self._range = range
        self._clock = clock
        self._time_box = time_box
        self._t = translator(language, "notify")

    async def graph(self, incident: Incident) -> GraphData:
        _ = self._t.gettext
        end = self._clock()
        start = end - self._range
        member = root_member(incident)
        if member is None:
            title = _("Incident {incident}").format(incident=incident.id)
            return GraphData(title, start, end, message=_("No alerts"), language=self._t.language)
        title = _("{what} · incident {incident}").format(
            what=member_what(member, self._t), incident=incident.id
        )
        blank = GraphData(_short(title, MAX_TITLE), start, end, language=self._t.language)
        if self._client is None:
            return message_graph(blank, _("No Prometheus configured (SCOUT_PROMETHEUS_URL)"))
        try:
            panels = await self._panels(self._client, incident, member, start, end)
        except PromQLError:
            return message_graph(blank, _("Prometheus did not answer"))
        if not panels:
            return message_graph(
                blank,
                _("No data for this alert in the last {hours}").format(
                    hours=self._hours(start, end)
                ),
            )
        return replace(blank, panels=panels)

    async def series_band(self, labels: Mapping[str, str], title: str) -> GraphData:
        """A scored series (its ``signal`` and own labels) between its band, over the
        graph range: what the console's anomalies page draws. Never raises."""
        _ = self._t.gettext
        end = self._clock()
        start = end - self._range
        blank = GraphData(_short(title, MAX_TITLE), start, end, language=self._t.language)
        if self._client is None:
            return message_graph(blank, _("No Prometheus configured (SCOUT_PROMETHEUS_URL)"))
        try:
            band = await self._band(self._client, labels, title, start, end, _step(end - start))
        except PromQLError:
            return message_graph(blank, _("Prometheus did not answer"))
        if band is None:
            return message_graph(
                blank,
                _("No history of this series in the last {hours}").format(
                    hours=self._hours(start, end)
                ),
            )
        return replace(blank, panels=(band,))

    def _hours(self, start: datetime, end: datetime) -> str:
        """The graph's range in hours: ``6 h``, ``1.5 h`` (fr: ``1,5 h``)."""
        hours = (end - start).total_seconds() / 3600
        if self._t.is_source:
            return f"{hours:g} h"
        count = format_decimal(hours, locale=self._t.locale)
        return self._t.gettext("{count} h").format(count=count)

    async def _panels(
        self,
        client: PromQLClient,
        incident: Incident,
        member: Member,
        start: datetime,
        end: datetime,
    ) -> tuple[Panel, ...]:
        step = _step(end - start)
        if member.labels.get("signal"):
            # An alert about a scored series: the series and its band say more
            # than the score the rule compared.
            signal = member.labels["signal"]
            band = await self._band(client, member.labels, signal, start, end, step)
            return () if band is None else (band,)
        panels = []
        expr = expression_of(member.generator_url)
        if expr is not None:
            query = value_expression(expr)
            ranged = await client.range(query, start, end, step, time_box=self._time_box)
            lines = [s for s in ranged if s.values and _agrees(s.labels, member.labels)]
            lines.sort(key=lambda s: sorted(s.labels.items()))
            if lines:
                panels.append(
                    Panel(
                        _short(query, MAX_TITLE),
                        tuple(lines[:MAX_LINES]),
                        omitted=len(lines[MAX_LINES:]),
                    )
                )
        evidence = next(
            (e for e in incident.anomaly_evidence if e.member == member.fingerprint and e.labels),
            None,
        )
        if evidence is not None:
            subject = evidence_subject(evidence, translator(self._t.language, "analysis"))
            band = await self._band(client, evidence.labels, subject, start, end, step)
            if band is not None:
                panels.append(band)
        return tuple(panels)

    async def _band(
        self,
        client: PromQLClient,
        reference: Mapping[str, str],
        title: str,
        start: datetime,
        end: datetime,
        step: timedelta,
    ) -> Panel | None:
        """The observed series and its band for the scored series ``reference`` names."""
        matchers = _selector(reference, ("signal", "instance"))
        if not matchers:
            return None  # it would ask for every scored series there is
        names = "|".join((OBSERVED, LOWER, UPPER))
        query = f'{{__name__=~"{names}",{matchers}}}'
        ranged = await client.range(query, start, end, step, time_box=self._time_box)
        by_name: dict[str, list[Series]] = {}
        for series in ranged:
            if series.values and _agrees(series.labels, reference):
                by_name.setdefault(series.labels.get("__name__", ""), []).append(series)
        observed = sorted(by_name.get(OBSERVED, []), key=lambda s: sorted(s.labels.items()))
        if not observed:
            return None
        lower, upper = by_name.get(LOWER, []), by_name.get(UPPER, [])
        # One band: it belongs to one series; with several, the first one's.
        first = observed[0]
        return Panel(
            _short(self._t.gettext("{title} (anomaly band)").format(title=title), MAX_TITLE),
            tuple(observed[:MAX_LINES]),
            lower=_same_series(first, lower),
            upper=_same_series(first, upper),
            omitted=len(observed[MAX_LINES:]),
        )


def _same_series(observed: Series, candidates: Sequence[Series]) -> Series | None:
    own = {k: v for k, v in observed.labels.items() if k != "__name__"}
    for candidate in candidates:
        if {k: v for k, v in candidate.labels.items() if k != "__name__"} == own:
            return candidate
    return None


def message_graph(data: GraphData, message: str) -> GraphData:
    """``data``'s title, times and language with ``message`` in place of the plot."""
    return replace(data, panels=(), message=message)


def failed_graph(data: GraphData) -> GraphData:
    """What is drawn instead of ``data`` when drawing it failed, in its language."""
    t = translator(data.language, "notify")
    return message_graph(data, t.gettext("The graph could not be drawn"))


def time_ticks(
    start: datetime, end: datetime, language: str = SOURCE_LANGUAGE
) -> tuple[list[float], list[str]]:
    """Ticks on round UTC times between ``start`` and ``end``: where (Unix seconds) and
    what they say (``14:00``; the date instead where a day starts, and on the first:
    ``Dec 03``, fr ``3 déc.``)."""
    t = translator(language, "notify")

    def day(moment: datetime) -> str:
        if t.is_source:
            return moment.strftime("%b %d")
        return format_date(moment, "d MMM", locale=t.locale)

    first, last = start.timestamp(), end.timestamp()
    spacing = next((s for s in TICK_SPACINGS if (last - first) / s <= MAX_TICKS), TICK_SPACINGS[-1])
    at = math.ceil(first / spacing) * spacing
    places: list[float] = []
    labels: list[str] = []
    while at <= last:
        moment = datetime.fromtimestamp(at, UTC)
        if spacing >= 86400:
            label = day(moment)
        else:
            label = moment.strftime("%H:%M")
            if not labels or (moment.hour, moment.minute) == (0, 0):
                label += "\n" + day(moment)
        places.append(float(at))
        labels.append(label)
        at += spacing
    return places, labels


def _finite(values: Sequence[float]) -> list[float]:
    # A NaN is a gap in the line, an infinity could not be scaled to.
    return [v if math.isfinite(v) else math.nan for v in values]


def render_png(data: GraphData) -> bytes:
    """The PNG of ``data``. CPU work: call it off the event loop (:func:`render_graph`)."""
    # Here, not at the top: the sidecar starts a second sooner, and a process
    # that never draws (the worker) never loads it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    t = translator(data.language, "notify")
    figure.suptitle(data.title, fontsize=11, fontweight="bold")
    if not data.panels:
        axes = figure.add_subplot()
        axes.set_axis_off()
        message = data.message or t.gettext("No data")
        axes.text(0.5, 0.5, message, ha="center", va="center", fontsize=13)
        return _png(figure)
    # Time is Unix seconds on the axis, labelled in UTC by time_ticks.
    axes_list = figure.subplots(len(data.panels), 1, sharex=True, squeeze=False)[:, 0]
    places, labels = time_ticks(data.start, data.end, data.language)
    for axes, panel in zip(axes_list, data.panels, strict=True):
        _draw(axes, panel, t)
        axes.set_xlim(data.start.timestamp(), data.end.timestamp())
        axes.set_xticks(places, labels)
    axes_list[-1].set_xlabel("UTC", fontsize=8)
    return _png(figure)


def _draw(axes: Axes, panel: Panel, t: Translator) -> None:
    axes.set_title(panel.title, fontsize=9, loc="left")
    axes.tick_params(labelsize=8)
    axes.grid(True, alpha=0.3)
    if panel.lower is not None and panel.upper is not None:
        lower = dict(zip(panel.lower.timestamps, panel.lower.values, strict=True))
        upper = dict(zip(panel.upper.timestamps, panel.upper.values, strict=True))
        shared = sorted(lower.keys() & upper.keys())
        axes.fill_between(
            shared,
            _finite([lower[t] for t in shared]),
            _finite([upper[t] for t in shared]),
            color="tab:green",
            alpha=0.2,
            linewidth=0,
            label=t.gettext("expected band"),
        )
    common = dict(
        set.intersection(*(set(s.labels.items()) for s in panel.lines)) if panel.lines else ()
    )
    for series in panel.lines:
        axes.plot(
            series.timestamps,
            _finite(series.values),
            linewidth=1.4,
            label=_legend(series.labels, common),
        )
    if panel.omitted:
        more = t.ngettext("and {count} more series", "and {count} more series", panel.omitted)
        axes.plot([], [], " ", label=more.format(count=panel.omitted))
    if len(panel.lines) > 1 or panel.lower is not None or panel.omitted:
        axes.legend(fontsize=7, loc="upper left")


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


async def render_graph(data: GraphData) -> bytes:
    """:func:`render_png` on a worker thread, so the event loop keeps serving."""
    return await asyncio.to_thread(render_png, data)
