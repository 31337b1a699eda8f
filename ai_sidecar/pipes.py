"""How a command runs: imported only when chosen, and quiet when its reader goes away."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable

# What a shell reports for a process SIGPIPE ended (`yes | head`): scripts
# with `set -o pipefail` see the same code from Scout as from coreutils.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def deferred(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The run function ``module.name``, imported when the command runs.

    Every command line builds the parser of every command (``--help`` lists
    them), so a parser names its run function this way: what a command runs
    (numpy, the store, the console) loads for that command alone.
    """

    def run(args: argparse.Namespace) -> int:
        function: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(module), name
        )
        return function(args)

    return run


def run_command(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``run(args)``; a closed standard output (``| head``) is exit 141 and no message.

    Python ignores SIGPIPE, so a write to a closed pipe raises
    :class:`BrokenPipeError`; a command's own ``except OSError`` must let it
    through to here.
    """
    try:
        result = run(args)
        sys.stdout.flush()  # inside the try: buffered output fails here, not at exit
    except BrokenPipeError:
        # Python flushes standard output again at exit, which would print
        # "Exception ignored ... BrokenPipeError": point it at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return result
