"""``scout-sidecar anomaly models`` and ``rollback`` on a registry in a temporary directory.

The whole round trip through a real Prometheus is in test_pipeline_e2e.py;
these are the registry's bad days: a version that cannot be read, a signal
name that is a path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ai_sidecar.anomaly.registry import ModelMeta, ModelRegistry, RegistryError
from ai_sidecar.cli import DATA_DIR_ENV, main

KEYS = ((("instance", "a"),),)


def saved(data_dir: Path, signal: str = "load") -> ModelRegistry:
    registry = ModelRegistry(data_dir)
    meta = ModelMeta(
        signal=signal,
        version=0,
        trained_at=1000.0,
        range_start=0.0,
        range_end=1000.0,
        step=60.0,
        series=1,
        training_seconds=1.0,
        params={},
        quality={},
        keys=KEYS,
    )
    registry.save(meta, {"level": np.zeros(1)})
    registry.save(meta, {"level": np.ones(1)})
    return registry


def test_models_lists_the_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    saved(tmp_path)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert main(["anomaly", "models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[1:]] == [["load", "1"], ["load", "2*"]]


def test_an_unreadable_version_is_one_line_and_exit_code_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    saved(tmp_path)
    meta = tmp_path / "anomaly" / "load" / "000001" / "meta.json"
    meta.write_text("{")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert main(["anomaly", "models"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"scout-sidecar: cannot read {meta}: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize("name", ["../load", "load/..", "..", "a/b"])
def test_a_signal_name_is_never_a_path(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    # Versions where a name like ../load leads: <data dir>/load instead of <data dir>/anomaly/load.
    data_dir = tmp_path / "data"
    saved(tmp_path / "elsewhere")
    data_dir.mkdir()
    outside = data_dir / "load"
    (tmp_path / "elsewhere" / "anomaly" / "load").rename(outside)
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    pointer = outside / "current"
    before = pointer.read_text()
    assert main(["anomaly", "rollback", name, "1"]) == 2
    assert "invalid signal name" in capsys.readouterr().err
    assert pointer.read_text() == before
    with pytest.raises(RegistryError, match="invalid signal name"):
        ModelRegistry(data_dir).versions(name)


def test_train_into_a_data_directory_it_cannot_create_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(DATA_DIR_ENV, str(blocker / "data"))
    monkeypatch.setenv("SCOUT_PROMETHEUS_URL", "http://127.0.0.1:9")
    assert main(["anomaly", "train"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"scout-sidecar: cannot create the data directory {blocker / 'data'}: ")
    assert err.count("\n") == 1


def test_train_interrupted_says_what_is_kept_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The command imports the trainer when it runs: patch it there.
    import ai_sidecar.anomaly.trainer as trainer

    async def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", interrupted)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("SCOUT_PROMETHEUS_URL", "http://127.0.0.1:9")
    assert main(["anomaly", "train"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("scout-sidecar: interrupted; signals trained before")
    assert "Traceback" not in err
