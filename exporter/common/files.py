"""Files written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def replaced_on_success(path: Path, *, private: bool = False) -> Iterator[BinaryIO]:
    """A handle on a new file beside ``path``, renamed over it when the block ends
    without an exception and removed when it raises: a reader (or a crash) never
    sees half a file, and a failed write leaves the old one in place.

    The temporary file is created before the block runs, so a directory that
    cannot be written to fails at once, before any costly work. The file gets
    the mode any new file gets (the umask), or 0600 when ``private``; its data
    is on disk before the rename.
    """
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}."
    )
    try:
        if not private:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(descriptor, 0o666 & ~umask)
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
