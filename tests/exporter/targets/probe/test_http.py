"""The http prober against aiohttp servers on 127.0.0.1, plain and TLS."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from aiohttp import web

from exporter.targets.probe.http import HttpModule
from exporter.targets.probe.registry import run_probe

from .conftest import assert_one_answer_has_no_jitter, closed_port, values_of

BODY = "scout says: all systems nominal\n"
UNEVEN_DELAY = 0.3


def site() -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text=BODY)

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status page")

    async def hop(request: web.Request) -> web.Response:
        left = int(request.match_info["n"])
        raise web.HTTPFound("/ok" if left <= 1 else f"/hop/{left - 1}")

    async def echo_header(request: web.Request) -> web.Response:
        return web.Response(text=f"x-probe={request.headers.get('X-Probe', '')}")

    async def ua(request: web.Request) -> web.Response:
        return web.Response(text=request.headers.get("User-Agent", ""))

    served = itertools.count()

    async def uneven(request: web.Request) -> web.Response:
        # Every other request waits: round trips alternate short, long, short, long.
        if next(served) % 2:
            await asyncio.sleep(UNEVEN_DELAY)
        return web.Response(text="uneven")

    app = web.Application()
    app.router.add_get("/ok", ok)  # also answers HEAD
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/hop/{n}", hop)
    app.router.add_get("/header", echo_header)
    app.router.add_get("/ua", ua)
    app.router.add_get("/uneven", uneven)
    return app


@pytest.fixture
async def http_url(aiohttp_server) -> str:
    server = await aiohttp_server(site())
    return f"http://127.0.0.1:{server.port}"


async def probe(target: str, **settings):
    loop = asyncio.get_running_loop()
    module = HttpModule(**{"timeout_seconds": 5.0, **settings})
    return await run_probe(target, module, loop.time() + 10)


async def test_ok_page(http_url):
    result = await probe(f"{http_url}/ok")
    values = values_of(result.families)
    assert result.success, result.error
    assert values["scout_probe_http_status_code"] == 200
    assert values["scout_probe_http_version"] == 1.1
    assert values["scout_probe_http_content_length_bytes"] == len(BODY)
    assert values["scout_probe_http_redirects"] == 0
    assert values["scout_probe_ip_protocol"] == 4
    assert values["scout_probe_packets_sent"] == 1
    assert values["scout_probe_loss_ratio"] == 0
    assert 0 < values["scout_probe_rtt_avg_seconds"] < 5
    assert "scout_probe_tls_cert_expiry_timestamp_seconds" not in values


async def test_bare_host_port_is_probed_over_http(aiohttp_server):
    server = await aiohttp_server(site())
    result = await probe(f"127.0.0.1:{server.port}/ok")
    assert result.success, result.error


@pytest.mark.parametrize(
    ("code", "valid", "success"),
    [
        (204, [], True),
        (404, [], False),
        (503, [], False),
        (404, [404], True),
        (200, [201, 202], False),
    ],
)
async def test_status_codes_decide_success(http_url, code, valid, success):
    result = await probe(f"{http_url}/status/{code}", valid_status_codes=valid)
    values = values_of(result.families)
    assert result.success is success, result.error
    assert values["scout_probe_http_status_code"] == code
    # The server answered either way: nothing was lost.
    assert values["scout_probe_loss_ratio"] == 0
    if not success:
        expected = f"status {code} is not in valid_status_codes {valid}" if valid else "2xx"
        assert result.error is not None
        assert expected in result.error


async def test_redirects_are_followed_and_counted(http_url):
    result = await probe(f"{http_url}/hop/3")
    values = values_of(result.families)
    assert result.success, result.error
    assert values["scout_probe_http_redirects"] == 3
    assert values["scout_probe_http_status_code"] == 200


async def test_redirect_not_followed_is_judged_itself(http_url):
    result = await probe(f"{http_url}/hop/1", follow_redirects=False)
    values = values_of(result.families)
    assert not result.success
    assert values["scout_probe_http_status_code"] == 302
    assert values["scout_probe_http_redirects"] == 0
    allowed = await probe(f"{http_url}/hop/1", follow_redirects=False, valid_status_codes=[302])
    assert allowed.success, allowed.error


async def test_body_must_match_every_expression(http_url):
    good = await probe(f"{http_url}/ok", fail_if_body_not_matches_regexp=["nominal", "^scout"])
    assert good.success, good.error
    bad = await probe(f"{http_url}/ok", fail_if_body_not_matches_regexp=["nominal", "degraded"])
    assert not bad.success
    assert bad.error == "body does not match 'degraded'"


async def test_head_request_reads_no_body(http_url):
    result = await probe(f"{http_url}/ok", method="HEAD")
    values = values_of(result.families)
    assert result.success, result.error
    assert values["scout_probe_http_status_code"] == 200
    # aiohttp sends Content-Length on HEAD too: the size of the GET body.
    assert values["scout_probe_http_content_length_bytes"] == len(BODY)


async def test_configured_headers_are_sent(http_url):
    result = await probe(
        f"{http_url}/header",
        headers={"X-Probe": "hello"},
        fail_if_body_not_matches_regexp=["x-probe=hello"],
    )
    assert result.success, result.error
    ua = await probe(f"{http_url}/ua", fail_if_body_not_matches_regexp=["^Scout-Probe/"])
    assert ua.success, ua.error


async def test_several_requests_each_measured(http_url):
    result = await probe(f"{http_url}/ok", count=4, interval_seconds=0.01)
    values = values_of(result.families)
    assert result.success, result.error
    assert values["scout_probe_packets_sent"] == 4
    assert values["scout_probe_packets_received"] == 4
    assert values["scout_probe_rtt_min_seconds"] <= values["scout_probe_rtt_max_seconds"]
    # Four RTTs: three steps, together at least the spread, each at most the spread.
    jitter = values["scout_probe_jitter_seconds"]
    spread = values["scout_probe_rtt_max_seconds"] - values["scout_probe_rtt_min_seconds"]
    assert spread / 3 - 1e-12 <= jitter <= spread + 1e-12


async def test_jitter_is_the_mean_change_between_successive_requests(http_url):
    """Round trips alternate short and long, so each step is about the delay."""
    result = await probe(f"{http_url}/uneven", count=4, interval_seconds=0)
    values = values_of(result.families)
    assert result.success, result.error
    assert values["scout_probe_packets_received"] == 4
    jitter = values["scout_probe_jitter_seconds"]
    # Not the spread of RTTs (stddev ~ delay / 2), not their mean (~ delay / 2): each step.
    assert UNEVEN_DELAY * 0.8 <= jitter <= UNEVEN_DELAY * 1.5
    spread = values["scout_probe_rtt_max_seconds"] - values["scout_probe_rtt_min_seconds"]
    assert jitter <= spread + 1e-12
    assert values["scout_probe_rtt_stddev_seconds"] < jitter


async def test_one_request_has_no_jitter(http_url):
    result = await probe(f"{http_url}/ok", count=1)
    values = values_of(result.families)
    assert result.success, result.error
    assert_one_answer_has_no_jitter(values)


async def test_refused_connection_is_lost_and_explained():
    port = closed_port()
    result = await probe(f"http://127.0.0.1:{port}/")
    values = values_of(result.families)
    assert not result.success
    assert values["scout_probe_loss_ratio"] == 1
    assert "scout_probe_http_status_code" not in values
    assert result.error == (
        f"no answer to requests to http://127.0.0.1:{port}/ (1 sent):"
        f" cannot connect to 127.0.0.1:{port}: connection refused"
    )


async def test_slow_server_times_out(aiohttp_server):
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/", slow)
    server = await aiohttp_server(app)
    loop = asyncio.get_running_loop()
    started = loop.time()
    module = HttpModule(timeout_seconds=0.3)
    result = await run_probe(f"http://127.0.0.1:{server.port}/", module, started + 10)
    release.set()
    assert not result.success
    # Cut at the 0.3 s timeout, not at the 10 s deadline (the ceiling sits between,
    # leaving a loaded machine its pauses).
    assert loop.time() - started < 5
    assert result.error is not None
    assert result.error.endswith("no answer within 0.3s")


async def test_https_with_self_signed_and_skip_verify(aiohttp_server, self_signed):
    server = await aiohttp_server(site(), ssl=self_signed.server_context())
    target = f"https://127.0.0.1:{server.port}/ok"
    result = await probe(target, tls_insecure_skip_verify=True)
    values = values_of(result.families)
    assert result.success, result.error
    assert values["scout_probe_tls_cert_expiry_timestamp_seconds"] == self_signed.chain[0].not_after
    refused = await probe(target)
    assert not refused.success
    assert refused.error is not None
    assert "TLS certificate not trusted" in refused.error
    assert "scout_probe_tls_cert_expiry_timestamp_seconds" not in values_of(refused.families)


async def test_https_with_trusted_chain_reports_earliest_expiry(aiohttp_server, chained):
    server = await aiohttp_server(site(), ssl=chained.server_context())
    result = await probe(f"https://localhost:{server.port}/ok", tls_ca_file=str(chained.ca_file))
    values = values_of(result.families)
    assert result.success, result.error
    assert values["scout_probe_tls_cert_expiry_timestamp_seconds"] == chained.earliest_not_after
    assert values["scout_probe_dns_lookup_seconds"] > 0
