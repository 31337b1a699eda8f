"""Trained anomaly models on disk: versions, metadata, the current pointer, checkpoints.

Layout under the data directory::

    anomaly/<signal>/
      000001/model.npz     the detector's state arrays right after training
      000001/meta.json     signal, training range, parameters, quality, series
      000002/...
      current              the version the scoring loop uses (a rollback moves it,
                           and notes when, so the refit schedule counts from then)
      checkpoint.npz       the scoring loop's online state, for a restart, with
                           the version it grew from, its series and last point

A version is written into a temporary directory and renamed into place, so a
crash never leaves half a model; ``current`` and the checkpoint are replaced
atomically the same way (a checkpoint is one file, so a crash never pairs
one checkpoint's series with another's state). Only the newest ``keep`` versions stay, and never is
the current one removed.
"""

from __future__ import annotations

import errno
import json
import math
import shutil
import tempfile
import time
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ai_sidecar.anomaly.signals import SIGNAL_NAME, SeriesKey
from ai_sidecar.errors import SidecarError
from exporter.common.files import replaced_on_success

ROOT = "anomaly"
MODEL_FILE = "model.npz"
META_FILE = "meta.json"
CURRENT_FILE = "current"
CHECKPOINT_FILE = "checkpoint.npz"
# The per-host multivariate models' samples (ai_sidecar/anomaly/hosts.py).
HOSTS_FILE = "hosts.npz"
# Version numbers tried when other processes save the same signal at once.
SAVE_ATTEMPTS = 10
# A save writes into a directory of this prefix, then renames it into place. A
# save killed midway leaves it behind; one older than this is nobody's any more
# (writing a model takes seconds) and is removed at the next save.
STAGING_PREFIX = ".incoming-"
STAGING_MAX_AGE = 3600.0
# The checkpoint's facts, as JSON text inside its npz (never a separate file).
CHECKPOINT_META = "checkpoint.meta"

State = Mapping[str, NDArray[Any]]


class RegistryError(SidecarError):
    """A model or version the registry does not have, or cannot read."""


@dataclass(frozen=True, slots=True)
class ModelMeta:
    """What a trained version is: the facts ``anomaly models`` lists.

    ``range_start``/``range_end`` are the first and last grid times of the
    training history; ``drift_edges``/``drift_reference`` are the bins and
    shares of the training residuals that drift is measured against;
    ``shares`` of ``share_count`` are the shares of the series it was trained
    for (``anomaly.shard``; a version from before shards: all of one).
    """

    signal: str
    version: int
    trained_at: float
    range_start: float
    range_end: float
    step: float
    series: int
    training_seconds: float
    params: Mapping[str, Any]
    quality: Mapping[str, float]
    keys: tuple[SeriesKey, ...] = field(repr=False)
    drift_edges: tuple[float, ...] = field(default=(), repr=False)
    drift_reference: tuple[float, ...] = field(default=(), repr=False)
    shares: tuple[int, ...] = (0,)
    share_count: int = 1

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["keys"] = [dict(key) for key in self.keys]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelMeta:
        fields = dict(data)
        fields["keys"] = tuple(tuple(sorted(labels.items())) for labels in data["keys"])
        fields["drift_edges"] = tuple(data.get("drift_edges", ()))
        fields["drift_reference"] = tuple(data.get("drift_reference", ()))
        fields["shares"] = tuple(data.get("shares", (0,)))
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The scoring loop's state of one signal: rows, the last point scored, detector state."""

    version: int
    keys: tuple[SeriesKey, ...]
    last_timestamp: float
    # Unix time each row last had a point (vanished series leave after a grace).
    last_seen: NDArray[np.float64]
    state: State


class ModelRegistry:
    """The models of every signal under ``<data_dir>/anomaly``; keeps ``keep`` versions each."""

    def __init__(self, data_dir: Path, keep: int = 5) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self._root = data_dir / ROOT
        self._keep = keep

    def signals(self) -> list[str]:
        """Signals with at least one version, by name."""
        if not self._root.is_dir():
            return []
        return sorted(
            d.name
            for d in self._root.iterdir()
            if d.is_dir() and SIGNAL_NAME.fullmatch(d.name) and self._numbers(d.name)
        )

    def versions(self, signal: str) -> list[ModelMeta]:
        """Every kept version of ``signal``, oldest first."""
        return [self._meta(signal, number) for number in self._numbers(signal)]

    def current_version(self, signal: str) -> int | None:
        """The version in use: the ``current`` pointer, else the newest; None without any."""
        numbers = self._numbers(signal)
        chosen = self._pointer(signal)[0]
        if chosen in numbers:
            return chosen
        return numbers[-1] if numbers else None

    def rolled_back_at(self, signal: str) -> float | None:
        """When the current version was made current by :meth:`rollback`; None otherwise."""
        chosen, since = self._pointer(signal)
        return since if chosen is not None and chosen == self.current_version(signal) else None

    def current(self, signal: str) -> ModelMeta | None:
        version = self.current_version(signal)
        return None if version is None else self._meta(signal, version)

    def load(self, signal: str, version: int | None = None) -> tuple[ModelMeta, dict[str, Any]]:
        """A version's metadata and state (the current one by default)."""
        chosen = self.current_version(signal) if version is None else version
        if chosen is None or chosen not in self._numbers(signal):
            raise RegistryError(self._missing(signal, chosen))
        meta = self._meta(signal, chosen)
        return meta, _read_arrays(self._version_dir(signal, chosen) / MODEL_FILE)

    def save(self, meta: ModelMeta, state: State) -> ModelMeta:
        """Store a new version (``meta.version`` is replaced), make it current, prune."""
        directory = self._directory(meta.signal)
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=directory))
        try:
            _write_arrays(staging / MODEL_FILE, state)
            # Another process (`anomaly train` beside a running sidecar) may take
            # the number first: then the rename fails and the next one is tried.
            for _ in range(SAVE_ATTEMPTS):
                numbers = self._numbers(meta.signal)
                version = (numbers[-1] if numbers else 0) + 1
                stored = ModelMeta(**{**_fields(meta), "version": version})
                (staging / META_FILE).write_text(json.dumps(stored.to_json()), encoding="utf-8")
                try:
                    staging.rename(self._version_dir(meta.signal, version))
                    break
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
            else:
                raise RegistryError(f"{meta.signal}: no free version number after retries")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._point_at(meta.signal, version)
        self._prune(meta.signal, version)
        return stored

    def rollback(self, signal: str, version: int, now: float | None = None) -> ModelMeta:
        """Make ``version`` current again, at ``now`` (default: the time); the scoring loop
        picks it up on its next cycle and keeps it until the next scheduled refit after."""
        if version not in self._numbers(signal):
            raise RegistryError(self._missing(signal, version))
        self._point_at(signal, version, since=time.time() if now is None else now)
        return self._meta(signal, version)

    def save_checkpoint(self, signal: str, checkpoint: Checkpoint) -> None:
        directory = self._directory(signal)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "version": checkpoint.version,
            "keys": [dict(key) for key in checkpoint.keys],
            "last_timestamp": checkpoint.last_timestamp,
        }
        arrays = {f"state.{name}": value for name, value in checkpoint.state.items()}
        arrays["last_seen"] = checkpoint.last_seen
        arrays[CHECKPOINT_META] = np.array(json.dumps(meta))
        _write_arrays(directory / CHECKPOINT_FILE, arrays)

    def save_host_samples(self, arrays: State) -> None:
        """Write the per-host models' samples (replacing the last ones in one rename)."""
        self._root.mkdir(parents=True, exist_ok=True)
        _write_arrays(self._root / HOSTS_FILE, arrays)

    def load_host_samples(self) -> dict[str, Any] | None:
        """The per-host models' samples, or None if none were written; RegistryError if bad."""
        path = self._root / HOSTS_FILE
        if not path.exists():
            return None
        return _read_arrays(path)

    def load_checkpoint(self, signal: str) -> Checkpoint | None:
        """The last checkpoint if it grew from the current version (else None: start afresh)."""
        try:
            arrays = _read_arrays(self._directory(signal) / CHECKPOINT_FILE)
            meta = json.loads(str(arrays.pop(CHECKPOINT_META)))
            if meta["version"] != self.current_version(signal):
                return None
            keys = tuple(tuple(sorted(labels.items())) for labels in meta["keys"])
            last_seen = arrays.pop("last_seen")
            last_timestamp = float(meta["last_timestamp"])
        except (ValueError, KeyError, TypeError, AttributeError, RegistryError):
            return None  # none, or unreadable: start from the model
        state = {name.removeprefix("state."): value for name, value in arrays.items()}
        if last_seen.shape != (len(keys),):
            return None
        return Checkpoint(meta["version"], keys, last_timestamp, last_seen, state)

    def _directory(self, signal: str) -> Path:
        """``signal``'s directory; a name that is not a signal's (``..``, a slash) is refused."""
        if not SIGNAL_NAME.fullmatch(signal):
            raise RegistryError(f"invalid signal name {signal!r} (letters, digits and _)")
        return self._root / signal

    def _numbers(self, signal: str) -> list[int]:
        directory = self._directory(signal)
        if not directory.is_dir():
            return []
        return sorted(
            int(d.name)
            for d in directory.iterdir()
            if d.name.isdigit() and (d / META_FILE).is_file()
        )

    def _version_dir(self, signal: str, version: int) -> Path:
        return self._directory(signal) / f"{version:06d}"

    def _meta(self, signal: str, version: int) -> ModelMeta:
        path = self._version_dir(signal, version) / META_FILE
        try:
            return ModelMeta.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"cannot read {path}: {exc}") from None

    def _point_at(self, signal: str, version: int, since: float | None = None) -> None:
        line = f"{version}\n" if since is None else f"{version} {since!r}\n"
        _write_atomically(self._directory(signal) / CURRENT_FILE, line.encode())

    def _pointer(self, signal: str) -> tuple[int | None, float | None]:
        """The ``current`` file: the version, and when a rollback wrote it (else None)."""
        try:
            words = (self._directory(signal) / CURRENT_FILE).read_text(encoding="ascii").split()
            version = int(words[0])
            since = float(words[1]) if len(words) > 1 else None
        except (OSError, ValueError, IndexError):
            return None, None
        return version, since if since is not None and math.isfinite(since) else None

    def _prune(self, signal: str, current: int) -> None:
        numbers = self._numbers(signal)
        for number in numbers[: -self._keep]:
            if number != current:
                shutil.rmtree(self._version_dir(signal, number), ignore_errors=True)
        _sweep_staging(self._directory(signal), time.time())

    def _missing(self, signal: str, version: int | None) -> str:
        kept = ", ".join(map(str, self._numbers(signal)))
        if not kept:
            return f"no trained model for signal {signal!r}"
        return f"signal {signal!r} has no version {version} (kept: {kept})"


def _sweep_staging(directory: Path, now: float) -> None:
    """Remove staging directories a killed save left behind.

    Only old ones: a fresh one may be another process's save in progress
    (``anomaly train`` beside a running sidecar).
    """
    for leftover in directory.glob(STAGING_PREFIX + "*"):
        try:
            stale = now - leftover.stat().st_mtime > STAGING_MAX_AGE
        except OSError:
            continue  # removed meanwhile by its owner
        if stale:
            shutil.rmtree(leftover, ignore_errors=True)


def _fields(meta: ModelMeta) -> dict[str, Any]:
    return {name: getattr(meta, name) for name in ModelMeta.__dataclass_fields__}


def _write_arrays(path: Path, arrays: State) -> None:
    # numpy's stub types the keyword arrays as its own keyword arguments.
    savez: Any = np.savez

    def write(handle: Any) -> None:
        savez(handle, **dict(arrays))

    _write_atomically(path, None, write)


def _read_arrays(path: Path) -> dict[str, Any]:
    try:
        # Opened here: np.load leaves its own handle open when the zip is bad.
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as loaded:
            return {name: loaded[name] for name in loaded.files}
    # A truncated file is a BadZipFile, an empty one an EOFError.
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise RegistryError(f"cannot read {path}: {exc}") from None


def _write_atomically(path: Path, data: bytes | None, write: Any = None) -> None:
    """Replace ``path`` with ``data`` (or what ``write(handle)`` writes) in one rename."""
    with replaced_on_success(path, private=True) as handle:
        if write is None:
            handle.write(data or b"")
        else:
            write(handle)
