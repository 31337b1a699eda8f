"""``scout-sidecar serve --web.processes 2``: a second HTTP process on the port."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import sqlite3
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil
import pytest
from prometheus_client import CollectorRegistry

from ai_sidecar.intake.processes import (
    DIRECTORY_PREFIX,
    SOCKET_NAME,
    STALE_AFTER_SECONDS,
    AddIncrements,
    CounterIncrements,
    intake_app,
    remove_stale_directories,
)
from ai_sidecar.keys import METRICS
from ai_sidecar.metrics import create_metrics
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.webhook import WEBHOOK_PATH
from scripts.localstack import Service, free_port, sidecar_service
from tests.ai_sidecar.builders import alert, payload

TOKEN = "intake-processes-token"


def test_counter_increments_are_sent_once_and_added_to_the_main_process():
    intake, main = create_metrics(), create_metrics()
    taken = CounterIncrements(intake)
    adder = AddIncrements(main)
    intake.webhook.alerts_received.inc(3)
    intake.webhook.requests.labels("200").inc(2)
    intake.webhook.alerts_invalid.labels("invalid").inc()
    adder.update(taken.take())
    taken.sent()
    assert taken.take() == []  # nothing new since
    intake.webhook.alerts_received.inc(2)
    adder.update(taken.take())
    taken.sent()
    value = main.registry.get_sample_value
    assert value("scout_sidecar_alerts_received_total") == 5
    assert value("scout_sidecar_webhook_requests_total", {"code": "200"}) == 2
    assert value("scout_sidecar_alerts_invalid_total", {"reason": "invalid"}) == 1


def test_increments_whose_send_failed_are_sent_with_the_next():
    intake, main = create_metrics(), create_metrics()
    taken = CounterIncrements(intake)
    intake.webhook.alerts_received.inc(3)
    assert [amount for *_, amount in taken.take()] == [3]  # the send fails: no sent()
    intake.webhook.alerts_received.inc(2)
    AddIncrements(main).update(taken.take())
    taken.sent()
    assert main.registry.get_sample_value("scout_sidecar_alerts_received_total") == 5
    assert taken.take() == []


def scout_counts(
    registry: CollectorRegistry,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every Scout counter sample of ``registry`` above zero."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        if family.type == "counter" and family.name.startswith("scout_")
        for sample in family.samples
        if sample.name.endswith("_total") and sample.value > 0
    }


async def test_all_an_intake_process_counts_reaches_the_main_process(aiohttp_client, tmp_path):
    """Whatever the webhook counts in an intake process, on each path a delivery can
    take, shows on the main process's /metrics once sent: no counter is left out."""
    settings = SidecarSettings(data_dir=tmp_path, webhook_token=TOKEN, max_body_bytes=4096)
    app = intake_app(settings, tmp_path / SOCKET_NAME, idle_timeout=10.0)
    client = await aiohttp_client(app)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    fresh = alert("LinkDown", instance="sw1")
    enriched = alert("LinkDown", instance="sw1", scout_enriched="true")
    answers = [
        await client.post(WEBHOOK_PATH, json=payload(fresh), headers={"Authorization": "Bearer x"}),
        await client.post(WEBHOOK_PATH, data=b"x" * 5000, headers=auth),
        await client.post(WEBHOOK_PATH, data="{}", headers={**auth, "Content-Type": "text/plain"}),
        await client.post(WEBHOOK_PATH, json={"version": "4"}, headers=auth),
        await client.post(WEBHOOK_PATH, json=payload(fresh, enriched, truncated=2), headers=auth),
        await client.post(WEBHOOK_PATH, json=payload(fresh), headers=auth),
    ]
    assert [answer.status for answer in answers] == [401, 413, 415, 400, 200, 200]
    counted = scout_counts(app[METRICS].registry)
    # Each of the webhook's counters moved, so the comparison below covers them all.
    webhook = ("received", "invalid", "duplicate", "truncated", "looped")
    expected = {f"scout_sidecar_alerts_{name}_total" for name in webhook}
    assert {name for name, _ in counted} >= expected | {"scout_sidecar_webhook_requests_total"}
    main = create_metrics()
    AddIncrements(main).update(CounterIncrements(app[METRICS]).take())
    assert scout_counts(main.registry) == counted


@pytest.mark.parametrize(
    "received",
    [
        "not a list",
        [("alerts_received", {}, -1.0)],
        [("alerts_received", {}, math.nan)],
        [("alerts_received", {}, math.inf)],
        [("return_trip_posts", {"peer": "x"}, 1.0)],  # not the webhook's
        [("requests", {"nope": "200"}, 1.0)],
        [("alerts_received",)],
    ],
)
def test_malformed_increments_change_nothing(received):
    main = create_metrics()
    AddIncrements(main).update(received)
    value = main.registry.get_sample_value
    assert value("scout_sidecar_alerts_received_total") == 0
    assert value("scout_sidecar_return_trip_posts_total", {"peer": "x"}) is None


# Starts real daemons: the slow lane (see the peers marker in pyproject).
@pytest.mark.peers
async def test_two_http_processes_share_the_port(tmp_path: Path, start_service):
    port = free_port()
    env = {"SCOUT_WEBHOOK_TOKEN": TOKEN, "SCOUT_DATA_DIR": str(tmp_path / "data")}
    service: Service = start_service(
        sidecar_service(tmp_path, port, ["--web.processes=2"], env=env)
    )
    assert service.process is not None
    main = psutil.Process(service.process.pid)
    base = f"http://127.0.0.1:{port}"
    hook = f"{base}/api/v1/alertmanager"
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def listens(process: psutil.Process) -> bool:
        try:
            connections = process.net_connections("tcp")
        except psutil.Error:  # it ended meanwhile (the killed one, a helper)
            return False
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections)

    def intake_processes() -> list[psutil.Process]:
        return [child for child in main.children() if listens(child)]

    async def post(index: int) -> None:
        # A connection of its own each, so either process may accept it.
        async with (
            aiohttp.ClientSession() as client,
            client.post(
                hook, json=payload(alert("ProbeLoss", instance=f"d{index}")), headers=headers
            ) as reply,
        ):
            assert reply.status == 200, await reply.text()

    async def wait_for(condition, what: str):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = condition()
            if found:
                return found
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    intake = (await wait_for(intake_processes, "an intake process"))[0]
    # It holds the sockets from its start; it accepts once it has started.
    await wait_for(lambda: b"intake process started" in service.log_path.read_bytes(), "serving")
    # With the main process stopped, only the intake process can accept: what
    # it acknowledges it stored itself.
    main.send_signal(signal.SIGSTOP)
    try:
        await asyncio.wait_for(asyncio.gather(*(post(i) for i in range(10))), 30)
    finally:
        main.send_signal(signal.SIGCONT)
    await asyncio.gather(*(post(i) for i in range(10, 40)))
    with sqlite3.connect(tmp_path / "data" / "scout.db") as db:
        assert db.execute("SELECT count(*) FROM alerts").fetchone() == (40,)

    # The main process's /metrics counts the intake process's requests too,
    # whichever process answers the scrape.
    async def received() -> float:
        async with aiohttp.ClientSession() as client, client.get(f"{base}/metrics") as reply:
            for line in (await reply.text()).splitlines():
                if line.startswith("scout_sidecar_alerts_received_total "):
                    return float(line.split()[1])
        raise AssertionError("no scout_sidecar_alerts_received_total")

    deadline = time.monotonic() + 10
    while await received() != 40:
        assert time.monotonic() < deadline, await received()
        await asyncio.sleep(0.2)

    # An intake process that dies is started again, and the port keeps answering.
    os.kill(intake.pid, signal.SIGKILL)
    await wait_for(
        lambda: [p for p in intake_processes() if p.pid != intake.pid], "a new intake process"
    )
    await asyncio.gather(*(post(i) for i in range(40, 50)))
    with sqlite3.connect(tmp_path / "data" / "scout.db") as db:
        assert db.execute("SELECT count(*) FROM alerts").fetchone() == (50,)

    # Stopping the main process (SIGTERM to its whole process group, as systemd
    # and Ctrl-C do) stops its intake processes too, and restarts nothing.
    children = main.children(recursive=True)
    logged = len(service.log_path.read_bytes())
    service.stop(grace=20)
    _, alive = psutil.wait_procs(children, timeout=20)
    assert alive == []
    assert b"restarting" not in service.log_path.read_bytes()[logged:]


@pytest.mark.peers
@pytest.mark.parametrize("processes", [1, 2])
async def test_a_stop_signal_to_the_process_group_restarts_no_child(
    tmp_path: Path, start_service, processes: int
):
    """Each child has the signal too and may end before the main process stops it:
    its watcher must not take that for a crash and start it again."""
    port = free_port()
    env = {"SCOUT_WEBHOOK_TOKEN": TOKEN, "SCOUT_DATA_DIR": str(tmp_path / "data")}
    service: Service = start_service(
        sidecar_service(tmp_path, port, [f"--web.processes={processes}"], env=env)
    )
    # Every child started: a fixed wait was too short on a loaded machine,
    # and a child the signal finds still starting proves nothing.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        log = service.log_path.read_text()
        if "worker process started" in log and log.count("intake process started") >= processes - 1:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the children did not all start: " + log[-2000:])
    # A request whose body never ends keeps a process draining for its
    # shutdown timeout (10 s): long enough for a watcher to restart a child
    # that the signal ended at once.
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /api/v1/alertmanager HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    await writer.drain()
    await asyncio.sleep(0.5)
    service.stop(grace=30)
    writer.close()
    log = service.log_path.read_text()
    assert "restarting" not in log, log[-2000:]
    assert "worker process stopped" in log


def test_socket_directories_of_killed_main_processes_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    old = time.time() - 2 * STALE_AFTER_SECONDS

    def directory(name: str, *, listening: bool = False, age: float = old) -> Path:
        path = tmp_path / f"{DIRECTORY_PREFIX}{name}"
        path.mkdir()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path / SOCKET_NAME))
        if listening:
            sock.listen(1)
            sockets.append(sock)
        else:
            sock.close()  # its file stays, and nobody answers on it: a killed main's
        os.utime(path, (age, age))
        return path

    sockets: list[socket.socket] = []
    killed = directory("killed00")
    kept = [
        directory("live0000", listening=True),
        directory("young000", age=time.time()),
    ]
    # Not what a main process leaves: a directory of that name holding more, or
    # something else where its socket would be, or a name mkdtemp does not make.
    more = directory("more0000")
    (more / "notes.txt").write_text("mine")
    os.utime(more, (old, old))
    kept.append(more)
    for name, content in (("file0000", "x"), ("1.4.0", None)):
        path = tmp_path / f"{DIRECTORY_PREFIX}{name}"
        path.mkdir()
        if content is not None:
            (path / SOCKET_NAME).write_text(content)
        os.utime(path, (old, old))
        kept.append(path)
    try:
        assert remove_stale_directories() == [killed]
    finally:
        for sock in sockets:
            sock.close()
    assert not killed.exists()
    assert [path for path in kept if not path.exists()] == []
