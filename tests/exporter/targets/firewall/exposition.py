"""Reading ``/firewall`` answers in the tests: scrape through the app, pick samples out."""

from __future__ import annotations

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called ``name`` in an exposition, by its sorted labels."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    """The one sample of ``name`` whose labels include ``labels``; ``None`` if there is none."""
    matches = [
        number for key, number in samples(text, name).items() if labels.items() <= dict(key).items()
    ]
    assert len(matches) <= 1, f"{name} {labels} matches {len(matches)} samples"
    return matches[0] if matches else None


def families(text: str) -> set[str]:
    """The names of the families in an exposition."""
    return {family.name for family in text_string_to_metric_families(text)}


async def scrape(
    client: TestClient, module: str, target: str, auth: str, scrape_timeout: str = "5"
) -> tuple[int, str]:
    response = await client.get(
        "/firewall",
        params={"module": module, "target": target, "auth": auth},
        headers={"X-Prometheus-Scrape-Timeout-Seconds": scrape_timeout},
    )
    return response.status, await response.text()
