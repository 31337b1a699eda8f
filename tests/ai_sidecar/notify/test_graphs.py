"""The graph in every notification: rendering, data from PromQL, signed URLs and the route."""

from __future__ import annotations

import asyncio
import io
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from matplotlib.image import imread

from ai_sidecar.app import create_app
from ai_sidecar.config import GraphsConfig, SidecarConfig
from ai_sidecar.errors import ConfigError
from ai_sidecar.graph_route import RenderedGraphs
from ai_sidecar.keys import STORE
from ai_sidecar.models import AnomalyEvidence, Incident, Member
from ai_sidecar.notify.graphs import (
    DPI,
    MAX_LINES,
    SIZE_INCHES,
    GraphData,
    GraphSource,
    Panel,
    render_graph,
    render_png,
    time_ticks,
)
from ai_sidecar.notify.signing import (
    EXPIRY_STEP,
    KEY_BYTES,
    GraphLinks,
    GraphSigner,
    graph_links,
    load_graph_key,
)
from ai_sidecar.promql import HttpPromQLClient, Sample, Series, UnavailableError
from ai_sidecar.settings import SidecarSettings
from scripts.localstack import Service
from tests.ai_sidecar.builders import member, stored_incident
from tests.peers.promql import backfill, start_prometheus

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KEY = b"k" * 32
GENERATOR = "http://prometheus.example/graph?g0.expr=ifHCInOctets%20%3E%201e9&g0.tab=1"


def pixels(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG_MAGIC)
    height, width, _ = imread(io.BytesIO(png), format="png").shape
    return width, height


def series(labels: dict[str, str], values: list[float], start: datetime = NOW) -> Series:
    first = (start - timedelta(hours=1)).timestamp()
    times = tuple(first + 60 * n for n in range(len(values)))
    return Series(labels, times, tuple(values))


class FakePromQL:
    """Answers range queries from a table keyed by a substring of the query."""

    def __init__(self, answers: dict[str, tuple[Series, ...]], fail: bool = False) -> None:
        self.answers = answers
        self.fail = fail
        self.queries: list[tuple[str, timedelta]] = []

    async def instant(self, query: str, at: datetime, *, time_box: timedelta) -> tuple[Sample, ...]:
        raise AssertionError("the graph asks for ranges only")

    async def range(
        self, query: str, start: datetime, end: datetime, step: timedelta, *, time_box: timedelta
    ) -> tuple[Series, ...]:
        self.queries.append((query, step))
        if self.fail:
            raise UnavailableError("cannot reach Prometheus")
        for part, answer in self.answers.items():
            if part in query:
                return answer
        return ()


def link_down(**labels: str) -> Member:
    return member("LinkDown", "sw1", generator_url=GENERATOR, ifName="Gi0/1", **labels)


def incident_of(*members: Member, evidence: tuple[AnomalyEvidence, ...] = ()) -> Incident:
    incident = stored_incident("inc-1", *members)
    return replace(incident, root_cause=members[0].fingerprint, anomaly_evidence=evidence)


# -- rendering -----------------------------------------------------------------


def test_a_graph_with_lines_and_a_band_renders_at_slack_preview_size():
    line = series({"__name__": "x", "instance": "sw1"}, [float(n % 7) for n in range(60)])
    lower = series({"__name__": "lower", "instance": "sw1"}, [1.0] * 60)
    upper = series({"__name__": "upper", "instance": "sw1"}, [5.0] * 60)
    data = GraphData(
        "LinkDown on sw1",
        NOW - timedelta(hours=1),
        NOW,
        (Panel("x", (line,), lower=lower, upper=upper),),
    )
    png = render_png(data)
    assert pixels(png) == (SIZE_INCHES[0] * DPI, SIZE_INCHES[1] * DPI)
    # Lines and a band make a bigger picture than the empty one with only words.
    empty = render_png(GraphData("LinkDown on sw1", data.start, data.end, message="No data"))
    assert pixels(empty) == pixels(png)
    assert len(png) > len(empty) > 1000


def test_renders_run_on_threads_without_sharing_state():
    """Figures, not pyplot: renders on several threads give each its own picture."""
    data = [
        GraphData(
            f"graph {n}",
            NOW - timedelta(hours=1),
            NOW,
            (Panel("x", (series({"n": str(n)}, [float(n * k) for k in range(60)]),)),),
        )
        for n in range(4)
    ]

    async def all_of() -> list[bytes]:
        return await asyncio.gather(*(render_graph(d) for d in data))

    pngs = asyncio.run(all_of())
    assert pngs == [render_png(d) for d in data]
    assert len(set(pngs)) == 4


@pytest.mark.parametrize(
    ("hours", "labels"),
    [
        (3, ["23:30\nDec 02", "00:00\nDec 03", "00:30", "01:00", "01:30", "02:00"]),
        (6, ["21:00\nDec 02", "22:00", "23:00", "00:00\nDec 03", "01:00", "02:00"]),
        (
            72,
            ["12:00\nNov 30", "00:00\nDec 01", "12:00", "00:00\nDec 02", "12:00", "00:00\nDec 03"],
        ),
        (24 * 14, ["Nov 26", "Dec 03"]),
    ],
)
def test_the_time_axis_is_labelled_in_utc_on_round_times(hours, labels):
    end = datetime(2026, 12, 3, 2, 17, tzinfo=UTC)
    places, shown = time_ticks(end - timedelta(hours=hours), end)
    assert shown == labels
    assert all(end.timestamp() - hours * 3600 <= p <= end.timestamp() for p in places)


# -- what is drawn -------------------------------------------------------------


async def test_the_root_causes_expression_is_queried_and_narrowed_to_its_labels():
    ours = series({"__name__": "ifHCInOctets", "instance": "sw1", "ifName": "Gi0/1"}, [1.0, 2.0])
    theirs = series({"__name__": "ifHCInOctets", "instance": "sw2", "ifName": "Gi0/1"}, [3.0])
    client = FakePromQL({"ifHCInOctets": (ours, theirs)})
    source = GraphSource(client, range=timedelta(hours=6), clock=lambda: NOW)
    data = await source.graph(incident_of(link_down(), member("Other", "x")))
    assert data.title == "LinkDown on sw1 · incident inc-1"
    [panel] = data.panels
    assert panel.lines == (ours,)
    assert panel.lower is None
    # The value side of the comparison, at most about 400 points over 6 hours.
    [(query, step)] = client.queries
    assert query == "ifHCInOctets"
    assert step == timedelta(seconds=54)
    assert (data.start, data.end) == (NOW - timedelta(hours=6), NOW)


async def test_lines_are_capped():
    many = tuple(
        series({"__name__": "ifHCInOctets", "instance": "sw1", "n": str(n)}, [1.0])
        for n in range(20)
    )
    source = GraphSource(FakePromQL({"ifHCInOctets": many}), range=timedelta(hours=1))
    [panel] = (await source.graph(incident_of(link_down()))).panels
    assert len(panel.lines) == MAX_LINES
    assert panel.omitted == 20 - MAX_LINES
    assert pixels(render_png(await source.graph(incident_of(link_down()))))


def anomaly_series(name: str, signal: str, value: float, **labels: str) -> Series:
    return series({"__name__": name, "signal": signal, "instance": "sw1", **labels}, [value] * 5)


async def test_an_alert_about_a_scored_series_shows_it_within_its_band():
    scored = member("AnomalyDetected", "sw1", signal="wan_throughput", ifName="Gi0/1")
    answers = (
        anomaly_series("scout_anomaly_observed", "wan_throughput", 9.0, ifName="Gi0/1"),
        anomaly_series("scout_anomaly_lower", "wan_throughput", 1.0, ifName="Gi0/1"),
        anomaly_series("scout_anomaly_upper", "wan_throughput", 5.0, ifName="Gi0/1"),
        # Another interface's band is not this alert's.
        anomaly_series("scout_anomaly_observed", "wan_throughput", 2.0, ifName="Gi0/2"),
    )
    client = FakePromQL({"scout_anomaly": answers})
    source = GraphSource(client, range=timedelta(hours=1))
    [panel] = (await source.graph(incident_of(scored))).panels
    assert panel.title == "wan_throughput (anomaly band)"
    assert [s.values[0] for s in panel.lines] == [9.0]
    assert panel.lower is not None
    assert panel.lower.values[0] == 1.0
    assert panel.upper is not None
    assert panel.upper.values[0] == 5.0
    [(query, _)] = client.queries
    assert 'signal="wan_throughput"' in query
    assert 'instance="sw1"' in query


async def test_anomaly_evidence_on_the_root_cause_adds_a_band_panel():
    down = link_down()
    evidence = AnomalyEvidence(
        "WAN throughput of sw1",
        0.97,
        member=down.fingerprint,
        labels={"signal": "wan_throughput", "instance": "sw1", "ifName": "Gi0/1"},
    )
    answers = {
        "ifHCInOctets": (series({"instance": "sw1", "ifName": "Gi0/1"}, [1.0]),),
        "scout_anomaly": (
            anomaly_series("scout_anomaly_observed", "wan_throughput", 9.0, ifName="Gi0/1"),
            anomaly_series("scout_anomaly_lower", "wan_throughput", 1.0, ifName="Gi0/1"),
            anomaly_series("scout_anomaly_upper", "wan_throughput", 5.0, ifName="Gi0/1"),
        ),
    }
    source = GraphSource(FakePromQL(answers), range=timedelta(hours=1))
    data = await source.graph(incident_of(down, evidence=(evidence,)))
    assert [p.title for p in data.panels] == [
        "ifHCInOctets",
        "WAN throughput of sw1 (anomaly band)",
    ]
    assert data.panels[1].upper is not None
    assert pixels(render_png(data)) == (800, 400)
    # In French, the subject saved in English is said again from its labels.
    french = GraphSource(FakePromQL(answers), range=timedelta(hours=1), language="fr")
    data = await french.graph(incident_of(down, evidence=(evidence,)))
    assert data.panels[1].title.startswith("WAN throughput sur sw1 Gi0/1 (")
    # Evidence about another member draws no band.
    other = replace(evidence, member="someone-else")
    data = await source.graph(incident_of(down, evidence=(other,)))
    assert len(data.panels) == 1


@pytest.mark.parametrize(
    ("client", "generator", "message"),
    [
        (FakePromQL({}, fail=True), GENERATOR, "Prometheus did not answer"),
        (None, GENERATOR, "No Prometheus configured (SCOUT_PROMETHEUS_URL)"),
        (FakePromQL({}), GENERATOR, "No data for this alert in the last 6 h"),
        (FakePromQL({"x": (series({}, [1.0]),)}), "", "No data for this alert in the last 6 h"),
    ],
    ids=["down", "unconfigured", "empty", "no-expression"],
)
async def test_without_data_the_picture_says_why(client, generator, message):
    source = GraphSource(client, range=timedelta(hours=6))
    down = member("LinkDown", "sw1", generator_url=generator)
    data = await source.graph(incident_of(down))
    assert (data.panels, data.message) == ((), message)
    assert pixels(render_png(data)) == (800, 400)


# -- signed URLs ---------------------------------------------------------------


def signer(ttl: timedelta = timedelta(days=7)) -> GraphSigner:
    return GraphSigner(KEY, ttl)


def test_a_signed_url_is_valid_until_it_expires():
    links = GraphLinks("https://scout.example/base/", signer())
    url = links.url("inc-1", NOW + timedelta(minutes=1))
    prefix = "https://scout.example/base/graphs/inc-1.png?expires="
    assert url.startswith(prefix)
    expires, sig = url.removeprefix(prefix).split("&sig=")
    # A week from now, rounded up to the hour: stable between re-renders.
    assert int(expires) - NOW.timestamp() == timedelta(days=7, hours=1).total_seconds()
    assert links.url("inc-1", NOW + timedelta(minutes=59)) == url
    assert links.url("inc-1", NOW + EXPIRY_STEP + timedelta(seconds=1)) != url
    s = signer()
    assert s.valid("inc-1", expires, sig, NOW)
    assert s.valid("inc-1", expires, sig, NOW + timedelta(days=7, minutes=59))
    assert not s.valid("inc-1", expires, sig, NOW + timedelta(days=7, hours=1))  # expired
    assert not s.valid("inc-2", expires, sig, NOW)  # another incident
    assert not s.valid("inc-1", str(int(expires) + 3600), sig, NOW)  # a longer lease
    assert not s.valid("inc-1", expires, sig[:-1] + ("0" if sig[-1] != "0" else "1"), NOW)
    assert not s.valid("inc-1", expires, None, NOW)
    assert not s.valid("inc-1", None, sig, NOW)
    assert not s.valid("inc-1", "-1", sig, NOW)
    assert not s.valid("inc-1", expires, "\udcff", NOW)
    assert not GraphSigner(b"x" * 32, timedelta(days=7)).valid("inc-1", expires, sig, NOW)


def test_an_incident_id_is_quoted_in_the_url():
    url = GraphLinks("http://s", signer()).url("a/b c", NOW)
    assert url.startswith("http://s/graphs/a%2Fb%20c.png?")


def test_the_key_is_created_once_private_and_kept(tmp_path):
    data_dir = tmp_path / "data"
    key = load_graph_key(GraphsConfig(), data_dir)
    assert len(key) == KEY_BYTES
    path = data_dir / "graph.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_graph_key(GraphsConfig(), data_dir) == key
    assert [p.name for p in data_dir.iterdir()] == ["graph.key"]  # no drafts left
    assert load_graph_key(GraphsConfig(), tmp_path / "other") != key


def test_a_data_directory_that_cannot_hold_the_key_is_a_config_error(tmp_path):
    # Not a directory: what a read-only one is to root, who ignores modes.
    blocked = tmp_path / "data"
    blocked.write_text("")
    with pytest.raises(ConfigError, match=r"set graphs\.key_file"):
        load_graph_key(GraphsConfig(), blocked)


def _key(tmp_path: Path, *, in_data_dir: bool) -> tuple[GraphsConfig, Path, Path]:
    """A 32-byte key in the data directory, or in a file graphs.key_file names."""
    data_dir = tmp_path / "data"
    key_file = data_dir / "graph.key" if in_data_dir else tmp_path / "shared.key"
    key_file.parent.mkdir(exist_ok=True)
    key_file.write_bytes(b"k" * 32)
    return GraphsConfig() if in_data_dir else GraphsConfig(key_file=key_file), data_dir, key_file


@pytest.mark.parametrize("in_data_dir", [True, False])
def test_a_key_others_can_read_is_warned_about(tmp_path, caplog, in_data_dir):
    config, data_dir, key_file = _key(tmp_path, in_data_dir=in_data_dir)
    key_file.chmod(0o600)
    with caplog.at_level("WARNING", logger="ai_sidecar.notify.graphs"):
        load_graph_key(config, data_dir)
    assert "chmod 600" not in caplog.text
    key_file.chmod(0o644)
    with caplog.at_level("WARNING", logger="ai_sidecar.notify.graphs"):
        assert load_graph_key(config, data_dir) == b"k" * 32
    assert "chmod 600" in caplog.text


@pytest.mark.parametrize("in_data_dir", [True, False])
@pytest.mark.parametrize("mode", [0o620, 0o602])
def test_a_key_others_can_write_is_refused(tmp_path, in_data_dir, mode):
    config, data_dir, key_file = _key(tmp_path, in_data_dir=in_data_dir)
    key_file.chmod(mode)
    with pytest.raises(ConfigError, match="can be written by others than its owner"):
        load_graph_key(config, data_dir)


def test_a_key_file_is_used_and_a_short_one_refused(tmp_path):
    key_file = tmp_path / "shared.key"
    key_file.write_bytes(b"s" * 40 + b"\n")
    config = GraphsConfig(key_file=key_file)
    assert load_graph_key(config, tmp_path / "data") == b"s" * 40
    assert not (tmp_path / "data" / "graph.key").exists()
    key_file.write_bytes(b"short")
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        load_graph_key(config, tmp_path / "data")
    with pytest.raises(ConfigError, match="cannot read it"):
        load_graph_key(GraphsConfig(key_file=tmp_path / "missing"), tmp_path / "data")


def test_no_links_without_an_external_url_or_when_disabled(tmp_path, caplog):
    without = SidecarConfig()
    with caplog.at_level("INFO", logger="ai_sidecar.notify.graphs"):
        assert graph_links(without, tmp_path) is None
    assert "return_trip.external_url is not set" in caplog.text
    base = {"return_trip": {"external_url": "https://scout.example"}}
    assert graph_links(SidecarConfig.model_validate(base), tmp_path) is not None
    disabled = SidecarConfig.model_validate({**base, "graphs": {"enabled": False}})
    assert graph_links(disabled, tmp_path) is None


# -- the route -----------------------------------------------------------------


async def test_concurrent_fetches_share_one_render():
    renders = RenderedGraphs(ttl=60)
    calls = 0

    async def render() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return b"png"

    assert await asyncio.gather(*(renders.get("inc-1", render) for _ in range(10))) == [b"png"] * 10
    assert calls == 1
    await renders.get("inc-2", render)
    assert calls == 2
    assert renders.busy == 0  # no lock left behind


async def test_a_render_is_kept_for_its_ttl_only():
    now = [0.0]
    renders = RenderedGraphs(ttl=60, clock=lambda: now[0])
    made = iter([b"one", b"two"])

    async def render() -> bytes:
        return next(made)

    assert await renders.get("inc-1", render) == b"one"
    now[0] = 59.0
    assert await renders.get("inc-1", render) == b"one"
    now[0] = 61.0
    assert await renders.get("inc-1", render) == b"two"


async def test_renders_kept_are_bounded():
    renders = RenderedGraphs(ttl=60, size=2)
    made: list[str] = []

    def render_of(key: str) -> Callable[[], Awaitable[bytes]]:
        async def render() -> bytes:
            made.append(key)
            return key.encode()

        return render

    for key in ("a", "b", "c", "a"):
        assert await renders.get(key, render_of(key)) == key.encode()
    assert made == ["a", "b", "c", "a"]  # "a" was dropped for "c", so drawn again


async def test_renders_of_many_incidents_are_drawn_a_few_at_a_time():
    # A flood of valid links to different incidents: each needs its own render.
    renders = RenderedGraphs(ttl=60, renders=3)
    running = peak = 0

    async def render() -> bytes:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return b"png"

    keys = [f"inc-{n}" for n in range(20)]
    assert await asyncio.gather(*(renders.get(key, render) for key in keys)) == [b"png"] * 20
    assert peak == 3
    assert renders.busy == 0


@pytest.fixture
def sidecar_settings(tmp_path) -> SidecarSettings:
    return SidecarSettings(data_dir=tmp_path / "data", webhook_token="t" * 24)


async def graph_client(
    aiohttp_client: Any, settings: SidecarSettings, incident: Incident
) -> tuple[Any, GraphLinks]:
    """A sidecar holding ``incident``, and links signed with its key (relative: path_of)."""
    app = create_app(settings, SidecarConfig())
    client = await aiohttp_client(app)
    await app[STORE].save_incidents([incident])
    links = GraphLinks(
        "http://ignored",
        GraphSigner(load_graph_key(GraphsConfig(), settings.data_dir), timedelta(days=7)),
    )
    return client, links


def path_of(url: str) -> str:
    return url.removeprefix("http://ignored")


async def test_the_route_serves_a_png_to_a_valid_url_without_a_token(
    aiohttp_client, sidecar_settings
):
    client, links = await graph_client(aiohttp_client, sidecar_settings, incident_of(link_down()))
    url = path_of(links.url("inc-1", datetime.now(UTC)))
    response = await client.get(url)
    assert response.status == 200
    assert response.content_type == "image/png"
    assert response.headers["Cache-Control"] == "private, max-age=60"
    body = await response.read()
    assert pixels(body) == (800, 400)


async def test_the_route_refuses_every_url_it_did_not_sign(aiohttp_client, sidecar_settings):
    client, links = await graph_client(aiohttp_client, sidecar_settings, incident_of(link_down()))
    now = datetime.now(UTC)
    good = path_of(links.url("inc-1", now))
    path, _, query = good.partition("?")
    expires, sig = (part.split("=")[1] for part in query.split("&"))
    past = int(now.timestamp()) - 10
    expired = f"{path}?expires={past}&sig={links.signer.signature('inc-1', past)}"
    tampered = [
        f"{path}?expires={expires}&sig={sig[::-1]}",  # signature
        f"{path}?expires={int(expires) + 1}&sig={sig}",  # expiry
        good.replace("/inc-1.png", "/inc-2.png"),  # incident
        expired,
        path,  # nothing
        f"{path}?expires={expires}",  # no signature
        f"{path}?sig={sig}",  # no expiry
    ]
    for url in tampered:
        response = await client.get(url)
        assert response.status == 403, url
        text = await response.text()
        assert text == "forbidden\n"
    # An unknown incident is said so only to a URL signed for it.
    unknown = path_of(links.url("inc-404", now))
    response = await client.get(unknown)
    assert response.status == 404
    assert (await client.get(good)).status == 200


async def test_the_incidents_api_still_needs_the_token(aiohttp_client, sidecar_settings):
    client, _ = await graph_client(aiohttp_client, sidecar_settings, incident_of(link_down()))
    assert (await client.get("/api/v1/incidents/inc-1")).status == 401


async def test_no_route_when_graphs_are_disabled(aiohttp_client, sidecar_settings):
    config = SidecarConfig.model_validate({"graphs": {"enabled": False}})
    client = await aiohttp_client(create_app(sidecar_settings, config))
    assert (await client.get("/graphs/inc-1.png?expires=1&sig=x")).status == 404
    assert not (sidecar_settings.data_dir / "graph.key").exists()


# -- a real Prometheus ----------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus holding the last three hours of an interface counter and its band."""
    directory = tmp_path_factory.mktemp("prometheus")
    end = int(datetime.now(UTC).timestamp()) // 60 * 60
    samples = []
    for minute in range(180):
        at = end - 60 * (180 - minute)
        for name, value in (
            ("ifHCInOctets", 1e9 + 1e6 * minute),
            ("scout_anomaly_observed", 50.0 + (minute % 30)),
            ("scout_anomaly_lower", 40.0),
            ("scout_anomaly_upper", 70.0),
        ):
            labels = {"instance": "sw1", "ifName": "Gi0/1"}
            if name.startswith("scout_"):
                labels["signal"] = "wan_throughput"
            samples.append((name, labels, value, at))
    backfill(directory, samples)
    service: Service
    service, url = start_prometheus(directory)
    service.start()
    try:
        service.wait_ready()
        yield url
    finally:
        service.stop(grace=5)


async def test_a_graph_from_a_real_prometheus(prometheus):
    scored = member("AnomalyDetected", "sw1", signal="wan_throughput", ifName="Gi0/1")
    async with aiohttp.ClientSession() as session:
        source = GraphSource(HttpPromQLClient(prometheus, session), range=timedelta(hours=3))
        down = await source.graph(incident_of(link_down()))
        anomaly = await source.graph(incident_of(scored))
    [line] = down.panels[0].lines
    assert line.labels["ifName"] == "Gi0/1"
    assert len(line.values) > 100
    assert line.values[-1] > line.values[0]
    [band] = anomaly.panels
    assert band.lower is not None
    assert set(band.lower.values) == {40.0}
    assert band.upper is not None
    assert set(band.upper.values) == {70.0}
    png = render_png(down)
    assert pixels(png) == (800, 400)
    assert len(png) > len(render_png(replace(down, panels=(), message="x")))


async def test_the_route_draws_from_a_real_prometheus(aiohttp_client, tmp_path, prometheus):
    settings = SidecarSettings(
        data_dir=tmp_path / "data", webhook_token="t" * 24, prometheus_url=prometheus
    )
    client, links = await graph_client(aiohttp_client, settings, incident_of(link_down()))
    response = await client.get(path_of(links.url("inc-1", datetime.now(UTC))))
    assert response.status == 200
    png = await response.read()
    assert pixels(png) == (800, 400)
    words_only = GraphData("LinkDown on sw1 · incident inc-1", NOW, NOW, message="No data")
    assert len(png) > 2 * len(render_png(words_only))


def test_matplotlib_loads_with_the_first_render_not_with_the_sidecar():
    # A fresh interpreter: this one has drawn already.
    code = "import sys, ai_sidecar.app, ai_sidecar.cli; print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"


async def test_a_scored_series_between_its_band_from_a_real_prometheus(prometheus):
    """What the console's anomalies page draws: the series named by its labels."""
    labels = {"signal": "wan_throughput", "instance": "sw1", "ifName": "Gi0/1"}
    async with aiohttp.ClientSession() as session:
        source = GraphSource(HttpPromQLClient(prometheus, session), range=timedelta(hours=3))
        found = await source.series_band(labels, "WAN throughput of sw1 Gi0/1")
        other = await source.series_band({**labels, "instance": "sw2"}, "WAN throughput of sw2")
    assert found.title == "WAN throughput of sw1 Gi0/1"
    [band] = found.panels
    [line] = band.lines
    assert line.labels["__name__"] == "scout_anomaly_observed"
    assert len(line.values) > 100
    assert band.lower is not None
    assert set(band.lower.values) == {40.0}
    assert band.upper is not None
    assert set(band.upper.values) == {70.0}
    assert other.panels == ()
    assert other.message == "No history of this series in the last 3 h"


async def test_a_scored_series_without_prometheus_says_why():
    labels = {"signal": "wan_throughput", "instance": "sw1"}
    alone = GraphSource(None, range=timedelta(hours=1))
    failing = GraphSource(FakePromQL({}, fail=True), range=timedelta(hours=1))
    assert (await alone.series_band(labels, "t")).message == (
        "No Prometheus configured (SCOUT_PROMETHEUS_URL)"
    )
    assert (await failing.series_band(labels, "t")).message == "Prometheus did not answer"


# -- in the configured language ------------------------------------------------


async def test_in_french_the_graphs_title_and_messages_are_french_and_names_are_not():
    ours = series({"__name__": "ifHCInOctets", "instance": "sw1", "ifName": "Gi0/1"}, [1.0, 2.0])
    source = GraphSource(
        FakePromQL({"ifHCInOctets": (ours,)}),
        range=timedelta(hours=1.5),
        clock=lambda: NOW,
        language="fr",
    )
    data = await source.graph(incident_of(link_down()))
    assert (data.title, data.language) == ("LinkDown sur sw1 · incident inc-1", "fr")
    empty = GraphSource(FakePromQL({}), range=timedelta(hours=1.5), language="fr")
    said = await empty.graph(incident_of(link_down()))
    assert said.message == "Aucune donnée pour cette alerte depuis 1,5 h"
    unconfigured = GraphSource(None, range=timedelta(hours=6), language="fr")
    assert (await unconfigured.graph(incident_of(link_down()))).message == (
        "Aucun Prometheus configuré (SCOUT_PROMETHEUS_URL)"
    )
    # English stays as it was.
    english = GraphSource(FakePromQL({}), range=timedelta(hours=1.5))
    assert (await english.graph(incident_of(link_down()))).message == (
        "No data for this alert in the last 1.5 h"
    )
    assert pixels(render_png(data)) == (800, 400)


def test_in_french_the_time_axis_writes_its_dates_in_french():
    end = datetime(2026, 12, 3, 2, 17, tzinfo=UTC)
    _, shown = time_ticks(end - timedelta(hours=6), end, "fr")
    assert shown == ["21:00\n2 déc.", "22:00", "23:00", "00:00\n3 déc.", "01:00", "02:00"]
    _, weeks = time_ticks(end - timedelta(days=14), end, "fr")
    assert weeks == ["26 nov.", "3 déc."]
