"""The model registry on disk: versions, metadata, keep-N, rollback, checkpoints."""

from __future__ import annotations

import contextlib
import json
import os
import time

import numpy as np
import pytest

from ai_sidecar.anomaly.registry import Checkpoint, ModelMeta, ModelRegistry, RegistryError

KEYS = ((("instance", "a"), ("job", "j")), (("instance", "b"), ("job", "j")))


def meta(signal: str = "cpu", trained_at: float = 1000.0) -> ModelMeta:
    return ModelMeta(
        signal=signal,
        version=0,
        trained_at=trained_at,
        range_start=0.0,
        range_end=trained_at,
        step=60.0,
        series=len(KEYS),
        training_seconds=1.5,
        params={"step": 60.0, "transform": "none"},
        quality={"residual_spread": 0.7},
        keys=KEYS,
        drift_edges=(-1.0, 0.0, 1.0),
        drift_reference=(0.25, 0.25, 0.25, 0.25),
    )


def state(level: float) -> dict[str, np.ndarray]:
    return {"level": np.full(2, level), "slots": np.arange(6.0).reshape(2, 3)}


def test_each_save_is_a_new_current_version_with_its_metadata(tmp_path):
    registry = ModelRegistry(tmp_path, keep=5)
    first = registry.save(meta(trained_at=1000.0), state(1.0))
    second = registry.save(meta(trained_at=2000.0), state(2.0))
    assert (first.version, second.version) == (1, 2)
    assert registry.current_version("cpu") == 2
    loaded, arrays = registry.load("cpu")
    assert loaded == second
    assert loaded.keys == KEYS
    assert loaded.drift_reference == (0.25, 0.25, 0.25, 0.25)
    assert np.array_equal(arrays["level"], [2.0, 2.0])
    _, old = registry.load("cpu", 1)
    assert np.array_equal(old["level"], [1.0, 1.0])
    assert registry.signals() == ["cpu"]
    on_disk = json.loads((tmp_path / "anomaly" / "cpu" / "000002" / "meta.json").read_text())
    assert on_disk["range_end"] == 2000.0
    assert on_disk["keys"][0] == {"instance": "a", "job": "j"}


def test_only_the_newest_versions_are_kept(tmp_path):
    registry = ModelRegistry(tmp_path, keep=2)
    for number in range(4):
        registry.save(meta(trained_at=float(number)), state(number))
    assert [m.version for m in registry.versions("cpu")] == [3, 4]
    assert not (tmp_path / "anomaly" / "cpu" / "000001").exists()
    assert not list((tmp_path / "anomaly" / "cpu").glob(".incoming-*"))


def test_rollback_moves_current_and_survives_pruning(tmp_path):
    registry = ModelRegistry(tmp_path, keep=2)
    registry.save(meta(), state(1.0))
    registry.save(meta(), state(2.0))
    assert registry.rollback("cpu", 1).version == 1
    assert registry.current_version("cpu") == 1
    assert np.array_equal(registry.load("cpu")[1]["level"], [1.0, 1.0])
    # A new model becomes current; the rolled-back one, no longer current, is pruned.
    registry.save(meta(), state(3.0))
    assert registry.current_version("cpu") == 3
    assert [m.version for m in registry.versions("cpu")] == [2, 3]
    with pytest.raises(RegistryError, match=r"signal 'cpu' has no version 1 \(kept: 2, 3\)"):
        registry.rollback("cpu", 1)
    with pytest.raises(RegistryError, match="no trained model for signal 'disk'"):
        registry.load("disk")


def test_a_rolled_back_current_version_is_never_pruned(tmp_path):
    registry = ModelRegistry(tmp_path, keep=1)
    registry.save(meta(), state(1.0))
    registry.rollback("cpu", 1)
    registry.save(meta(), state(2.0))
    assert registry.current_version("cpu") == 2
    assert [m.version for m in registry.versions("cpu")] == [2]


def test_a_checkpoint_counts_only_for_the_version_it_grew_from(tmp_path):
    registry = ModelRegistry(tmp_path, keep=3)
    registry.save(meta(), state(1.0))
    assert registry.load_checkpoint("cpu") is None
    registry.save_checkpoint(
        "cpu", Checkpoint(1, KEYS, 5000.0, np.array([4940.0, 5000.0]), state(7.0))
    )
    found = registry.load_checkpoint("cpu")
    assert found is not None
    assert (found.version, found.keys, found.last_timestamp) == (1, KEYS, 5000.0)
    assert np.array_equal(found.last_seen, [4940.0, 5000.0])
    assert np.array_equal(found.state["level"], [7.0, 7.0])
    registry.save(meta(), state(2.0))  # a newer model: the old checkpoint no longer fits
    assert registry.load_checkpoint("cpu") is None
    registry.rollback("cpu", 1)
    assert registry.load_checkpoint("cpu") is not None


def test_unreadable_files_are_registry_errors(tmp_path):
    registry = ModelRegistry(tmp_path)
    registry.save(meta(), state(1.0))
    (tmp_path / "anomaly" / "cpu" / "000001" / "model.npz").write_bytes(b"not numpy")
    with pytest.raises(RegistryError, match=r"cannot read .*model\.npz"):
        registry.load("cpu")
    (tmp_path / "anomaly" / "cpu" / "000001" / "meta.json").write_text("{")
    with pytest.raises(RegistryError, match=r"cannot read .*meta\.json"):
        registry.versions("cpu")


def test_a_crash_while_checkpointing_never_pairs_one_checkpoint_with_another(tmp_path, monkeypatch):
    registry = ModelRegistry(tmp_path)
    registry.save(meta(), state(1.0))
    registry.save_checkpoint("cpu", Checkpoint(1, KEYS, 5000.0, np.array([1.0, 2.0]), state(7.0)))
    other_keys = ((("instance", "c"), ("job", "j")), (("instance", "d"), ("job", "j")))
    replaced = 0
    real_replace = os.replace

    def crash_after_the_first_rename(source, target):
        nonlocal replaced
        replaced += 1
        if replaced > 1:
            raise OSError("killed")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", crash_after_the_first_rename)
    with contextlib.suppress(OSError):
        registry.save_checkpoint(
            "cpu", Checkpoint(1, other_keys, 9000.0, np.array([3.0, 4.0]), state(9.0))
        )
    monkeypatch.setattr(os, "replace", real_replace)
    found = registry.load_checkpoint("cpu")
    assert found is not None
    written = {KEYS: (5000.0, 7.0), other_keys: (9000.0, 9.0)}
    assert (found.last_timestamp, found.state["level"][0]) == written[found.keys]


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04truncated"])
def test_a_truncated_model_or_checkpoint_is_a_registry_error(tmp_path, content):
    registry = ModelRegistry(tmp_path)
    registry.save(meta(), state(1.0))
    registry.save_checkpoint("cpu", Checkpoint(1, KEYS, 5000.0, np.array([1.0, 2.0]), state(7.0)))
    directory = tmp_path / "anomaly" / "cpu"
    (directory / "checkpoint.npz").write_bytes(content)
    assert registry.load_checkpoint("cpu") is None
    (directory / "000001" / "model.npz").write_bytes(content)
    with pytest.raises(RegistryError, match=r"cannot read .*model\.npz"):
        registry.load("cpu")


def test_a_rollback_notes_when_it_was_made_and_a_new_version_clears_it(tmp_path):
    registry = ModelRegistry(tmp_path)
    registry.save(meta(), state(1.0))
    registry.save(meta(trained_at=2000.0), state(2.0))
    assert registry.rolled_back_at("cpu") is None
    registry.rollback("cpu", 1, now=5000.0)
    assert (registry.current_version("cpu"), registry.rolled_back_at("cpu")) == (1, 5000.0)
    registry.save(meta(trained_at=6000.0), state(3.0))
    assert (registry.current_version("cpu"), registry.rolled_back_at("cpu")) == (3, None)


def test_a_version_saved_meanwhile_by_another_process_takes_the_next_number(tmp_path, monkeypatch):
    registry = ModelRegistry(tmp_path)
    registry.save(meta(), state(1.0))
    other = ModelRegistry(tmp_path)  # `anomaly train` beside the running sidecar
    real_numbers = registry._numbers
    counted = 0

    def another_save_after_the_count(signal):
        nonlocal counted
        counted += 1
        found = real_numbers(signal)
        if counted == 1:
            other.save(meta(), state(2.0))
        return found

    monkeypatch.setattr(registry, "_numbers", another_save_after_the_count)
    stored = registry.save(meta(), state(3.0))
    monkeypatch.undo()
    assert stored.version == 3
    assert [m.version for m in registry.versions("cpu")] == [1, 2, 3]
    assert registry.load("cpu", 2)[1]["level"][0] == 2.0
    assert registry.load("cpu", 3)[1]["level"][0] == 3.0
    assert registry.load("cpu", 3)[0].version == 3
    assert not list((tmp_path / "anomaly" / "cpu").glob(".incoming-*"))


def test_a_save_removes_what_a_killed_save_left_behind_but_not_a_fresh_one(tmp_path):
    registry = ModelRegistry(tmp_path, keep=5)
    registry.save(meta(), state(1.0))
    directory = tmp_path / "anomaly" / "cpu"
    killed = directory / ".incoming-killed"
    killed.mkdir()
    (killed / "model.npz").write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(killed, (two_hours_ago, two_hours_ago))
    in_progress = directory / ".incoming-another-process"
    in_progress.mkdir()
    registry.save(meta(), state(2.0))
    assert not killed.exists()
    assert in_progress.exists()
    assert [m.version for m in registry.versions("cpu")] == [1, 2]
