"""A reload puts a new ``language`` in force: the next analyses, root-cause reasons and
priorities are written in it, whether the worker runs inline or in its own process."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ai_sidecar.app import create_app
from ai_sidecar.components import Components
from ai_sidecar.config import SidecarConfig, load_config
from ai_sidecar.enrichment.chain import AnalystChain
from ai_sidecar.enrichment.local import LocalAnalyst
from ai_sidecar.keys import RELOADER
from ai_sidecar.metrics import SidecarMetrics
from ai_sidecar.priority import NoAnomalyEvidence
from ai_sidecar.settings import SidecarSettings
from ai_sidecar.store import Store
from tests.ai_sidecar.builders import OfflineContext, alert, payload
from tests.ai_sidecar.test_app import wait_until
from tests.ai_sidecar.test_reload import AUTH, settings, write_config
from tests.peers.alertmanager import Alertmanager


def local_components(
    config: SidecarConfig,
    settings: SidecarSettings,
    session: aiohttp.ClientSession,
    *,
    db: Store,
    metrics: SidecarMetrics,
) -> Components:
    """The local analyst alone; importable by name, so the worker process can build it too."""
    return Components(
        AnalystChain(LocalAnalyst(config.runbooks)), OfflineContext(), NoAnomalyEvidence()
    )


async def analysed(client: Any, instance: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        body = await (await client.get("/api/v1/incidents", headers=AUTH)).json()
        for incident in body:
            labels = [m["labels"].get("instance") for m in incident["alerts"]]
            if instance in labels and incident["analysis"]:
                return dict(incident)
        return None

    return dict(await wait_until(found, 30))


async def post(client: Any, name: str, site: str, instance: str) -> None:
    fired = alert(name, site=site, instance=instance)
    assert (await client.post("/api/v1/alertmanager", json=payload(fired), headers=AUTH)).ok


@pytest.mark.parametrize("how", ["post", "sighup", "worker-process"])
async def test_a_reloaded_language_writes_the_next_analyses_in_it(
    aiohttp_client: Any, tmp_path: Path, how: str
) -> None:
    path = write_config(tmp_path / "scout.yml", "language: en\n")
    app = create_app(
        settings(tmp_path, path),
        load_config(path),
        components=local_components,
        worker_process=how == "worker-process",
        reload_on_sighup=how == "sighup",
    )
    client = await aiohttp_client(app)
    await post(client, "DeviceDown", "ams", "r1")
    before = await analysed(client, "r1")
    assert before["analysis"]["summary"].startswith("Open incident for site=ams since ")
    assert before["analysis"]["root_cause"].startswith(
        "DeviceDown on r1 (device layer) is the probable root cause. "
        "Why: only alert in the incident: DeviceDown on r1."
    )

    write_config(path, "language: fr\n")
    if how == "sighup":
        os.kill(os.getpid(), signal.SIGHUP)

        async def reloaded() -> bool:
            return app[RELOADER].config.language == "fr"

        await wait_until(reloaded, 10)
    else:
        assert (await client.post("/-/reload", headers=AUTH)).status == 200
    assert app[RELOADER].config.language == "fr"
    await post(client, "DiskFull", "fra", "s9")
    after = await analysed(client, "s9")
    analysis = after["analysis"]
    assert analysis["summary"].startswith("Incident en cours pour site=fra depuis le ")
    # Names stay as they are; the words around them are French.
    assert analysis["root_cause"].startswith(
        "DiskFull sur s9 (couche hôte) est la cause racine probable. "
        "Pourquoi : seule alerte de l\u2019incident : DiskFull sur s9."
    )
    assert analysis["actions"] == ["Vérifiez DiskFull sur s9."]
    assert any(reason.startswith("sévérité ") for reason in after["priorityReasons"])


@pytest.mark.peers
async def test_a_reloaded_language_reaches_the_next_enriched_copies(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """The return trip follows a reload too: copies written after it carry ``scout_lang``,
    which Alertmanager's templates branch on; copies written before it do not."""
    am_config = tmp_path / "alertmanager.yml"
    am_config.write_text("route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n")
    path = write_config(tmp_path / "scout.yml", "language: en\n")
    with Alertmanager(tmp_path, am_config) as am:
        app = create_app(
            replace(settings(tmp_path, path), alertmanager_urls=(am.url,)),
            load_config(path),
            components=local_components,
        )
        client = await aiohttp_client(app)

        async def copy_of(instance: str) -> list[dict[str, Any]]:
            # Off the event loop: the sidecar under test runs on it.
            filters = ('scout_enriched="true"', f'instance="{instance}"')
            return await asyncio.to_thread(am.alerts, *filters)

        await post(client, "DeviceDown", "ams", "r1")
        [before] = await wait_until(lambda: copy_of("r1"), 30)
        assert "scout_lang" not in before["annotations"]

        write_config(path, "language: fr\n")
        assert (await client.post("/-/reload", headers=AUTH)).status == 200
        await post(client, "DiskFull", "fra", "s9")
        [after] = await wait_until(lambda: copy_of("s9"), 30)
        assert after["annotations"]["scout_lang"] == "fr"
