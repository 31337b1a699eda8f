"""scripts/shards.py: the sharded deployment's configs, checked by promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from scripts import shards
from scripts.shards import Deployment, ShardsError, deployment_configs, one_host
from tests.test_configs import to_exporter

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "prometheus" / "sharded"


def test_the_shipped_configs_are_what_the_generator_makes():
    """prometheus/sharded/ (docker-compose.yml's sharded profile) is regenerated, never edited."""
    expected = deployment_configs(one_host(2), SHIPPED)
    shipped = {p.name: yaml.safe_load(p.read_text()) for p in SHIPPED.glob("*.yml")}
    assert shipped == expected, "run: python scripts/shards.py --shards 2 --out prometheus/sharded"


@pytest.mark.parametrize("count", [1, 3])
def test_every_file_sd_job_keeps_one_share_of_the_same_lists(count):
    configs = deployment_configs(one_host(count), SHIPPED)
    template = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    file_sd = {j["job_name"]: j for j in template["scrape_configs"] if "file_sd_configs" in j}
    assert file_sd
    for k in range(count):
        config = configs[f"shard-{k}.yml"]
        assert config["global"]["external_labels"] == {"shard": str(k)}
        assert config["rule_files"] == ["../rules/*.yml"]
        jobs = {j["job_name"]: j for j in config["scrape_configs"]}
        assert set(jobs) == {"prometheus", "scout-exporter", *file_sd}
        for name, job in file_sd.items():
            hashmod, keep, *rest = jobs[name]["relabel_configs"]
            assert hashmod["action"] == "hashmod"
            assert hashmod["modulus"] == count
            assert hashmod["source_labels"] == ["__address__"]
            assert keep == {
                "source_labels": [hashmod["target_label"]],
                "regex": str(k),
                "action": "keep",
            }
            # The template's relabelling, in its order, but for the exporter's address.
            own = to_exporter(jobs[name])
            assert own["replacement"] == one_host(count).exporters[k]
            assert rest == [
                own if r.get("target_label") == "__address__" else r for r in job["relabel_configs"]
            ]
            assert jobs[name]["file_sd_configs"] == [
                {"files": ["../" + f for f in sd["files"]]} for sd in job["file_sd_configs"]
            ]


def test_the_global_tier_scrapes_what_no_shard_scrapes():
    deployment = one_host(2)
    configs = deployment_configs(deployment, SHIPPED)
    jobs = {j["job_name"]: j for j in configs["global.yml"]["scrape_configs"]}
    assert set(jobs) == {
        "prometheus",
        "alertmanager",
        "scout-sidecar",
        "victoria-metrics",
        "vmalert",
        "scout-shard",
    }
    assert jobs["scout-sidecar"]["honor_labels"] is True
    assert configs["global.yml"]["global"]["external_labels"] == {"shard": "global"}
    for k in range(2):
        shard_jobs = {j["job_name"] for j in configs[f"shard-{k}.yml"]["scrape_configs"]}
        assert not shard_jobs & {"alertmanager", "scout-sidecar"}


def test_only_the_global_tier_sends_the_watchdog():
    """One Watchdog reaches Alertmanager per deployment: every shard evaluates the shipped
    rules, Watchdog included, and drops that one alert before sending."""
    rules = yaml.safe_load((REPO / "prometheus" / "rules" / "scout.rules.yml").read_text())
    names = {rule.get("alert") for group in rules["groups"] for rule in group["rules"]}
    assert shards.WATCHDOG in names
    configs = deployment_configs(one_host(3), SHIPPED)
    drop_watchdog = [{"source_labels": ["alertname"], "regex": "Watchdog", "action": "drop"}]
    for k in range(3):
        alerting = configs[f"shard-{k}.yml"]["alerting"]
        assert alerting["alert_relabel_configs"] == drop_watchdog
    assert "alert_relabel_configs" not in configs["global.yml"]["alerting"]


def test_configs_are_valid_for_promtool(tmp_path):
    deployment = Deployment(
        exporters=["10.0.0.1:8781", "10.0.0.2:8781", "10.0.0.3:8781"],
        prometheis=["10.0.0.1:9090", "10.0.0.2:9090", "10.0.0.3:9090"],
        global_prometheus="10.0.1.1:9090",
        alertmanagers=["10.0.1.1:9093", "10.0.1.2:9093"],
    )
    written = shards.write_deployment(deployment, tmp_path)
    assert [p.name for p in written] == ["shard-0.yml", "shard-1.yml", "shard-2.yml", "global.yml"]
    for path in written:
        config = yaml.safe_load(path.read_text())
        # Outside the repository's prometheus/ directory: absolute paths that exist.
        assert all(Path(p).is_absolute() for p in config["rule_files"])
        [alerting] = config["alerting"]["alertmanagers"]
        assert alerting["static_configs"] == [{"targets": ["10.0.1.1:9093", "10.0.1.2:9093"]}]
    result = subprocess.run(
        ["promtool", "check", "config", *map(str, written)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_job_that_is_neither_sharded_nor_known_is_refused():
    template = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    template["scrape_configs"].append(
        {"job_name": "blackbox", "static_configs": [{"targets": ["x"]}]}
    )
    with pytest.raises(ShardsError, match="job 'blackbox'"):
        shards.shard_config(template, one_host(2), 0, SHIPPED)


def test_addresses_must_pair_up_and_differ():
    with pytest.raises(ShardsError, match="one exporter and one Prometheus per shard"):
        Deployment(exporters=["a:1", "b:1"], prometheis=["c:1"])
    with pytest.raises(ShardsError, match="two processes on one address: a:1"):
        Deployment(exporters=["a:1"], prometheis=["a:1"])


def test_the_command_line_says_what_is_wrong(tmp_path, capsys):
    assert shards.main(["--shards", "0", "--out", str(tmp_path)]) == 1
    assert "--shards must be 1 or more" in capsys.readouterr().err
    assert shards.main(["--shards", "3", "--out", str(tmp_path), "--exporters", "a:1"]) == 1
    assert "one exporter and one Prometheus per shard" in capsys.readouterr().err
    assert shards.main(["--shards", "3", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "global.yml",
        "shard-0.yml",
        "shard-1.yml",
        "shard-2.yml",
    ]


def test_the_templates_external_labels_reach_every_tier():
    """docs/notifications.md sets scout_lang in prometheus.yml's external_labels: sharding
    must not drop it (nor any other label the template puts on every series and alert)."""
    template = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    template["global"]["external_labels"] = {"scout_lang": "fr"}
    assert shards.shard_config(template, one_host(2), 1, SHIPPED)["global"]["external_labels"] == {
        "scout_lang": "fr",
        "shard": "1",
    }
    config = shards.global_config(template, one_host(2), SHIPPED)
    assert config["global"]["external_labels"] == {"scout_lang": "fr", "shard": "global"}
    template["global"]["external_labels"] = {"shard": "eu"}
    with pytest.raises(ShardsError, match="external label 'shard'"):
        shards.shard_config(template, one_host(2), 0, SHIPPED)


def test_only_the_scout_exporter_address_is_replaced_by_the_shards_own():
    """A file_sd job of another exporter (blackbox-style) keeps its exporter's address:
    only relabelling to the template's scout-exporter goes to shard k's exporter."""
    template = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    blackbox = {
        "job_name": "blackbox",
        "metrics_path": "/probe",
        "file_sd_configs": [{"files": ["targets/http.yml"]}],
        "relabel_configs": [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"target_label": "__address__", "replacement": "10.9.9.9:9115"},
        ],
    }
    template["scrape_configs"].append(blackbox)
    config = shards.shard_config(template, one_host(2), 1, SHIPPED)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert to_exporter(jobs["blackbox"])["replacement"] == "10.9.9.9:9115"
    assert to_exporter(jobs["snmp"])["replacement"] == one_host(2).exporters[1]


@pytest.mark.parametrize(
    "flag", ["--victoria-metrics=http://vm:8428", "--alertmanagers=am1:9093,am2", "--sidecar=:8782"]
)
def test_an_address_that_is_not_host_port_is_refused(tmp_path, capsys, flag):
    assert shards.main(["--shards", "2", "--out", str(tmp_path), flag]) == 1
    assert "host:port" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_fewer_shards_remove_the_stale_shard_configs(tmp_path, capsys):
    """shard-2.yml left from N=3 beside N=2's configs would be a third shard keeping
    hashmod 2 of 3: targets scraped twice. The generator removes its own stale files
    and refuses to touch one it did not write."""
    assert shards.main(["--shards", "3", "--out", str(tmp_path)]) == 0
    assert shards.main(["--shards", "2", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "global.yml",
        "shard-0.yml",
        "shard-1.yml",
    ]
    (tmp_path / "shard-5.yml").write_text("global: {}\n")
    capsys.readouterr()
    assert shards.main(["--shards", "1", "--out", str(tmp_path)]) == 1
    assert "shard-5.yml" in capsys.readouterr().err
    assert (tmp_path / "shard-1.yml").exists()


def test_an_output_directory_that_cannot_be_written_is_said_plainly(tmp_path, capsys):
    occupied = tmp_path / "a-file"
    occupied.write_text("")
    assert shards.main(["--shards", "2", "--out", str(occupied)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"shards: cannot write the configs in {occupied}:"), err
    assert "Traceback" not in err
