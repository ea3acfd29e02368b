"""The console every command prints its tables through: on a terminal rich's own width; elsewhere (a redirected
run, a SLURM job log, a pipe) no width limit, so a table is as wide as its content and every number shows instead
of being cut to '…' at 80 columns (rich's default for a file)."""
from __future__ import annotations

import sys

FILE_WIDTH = 100_000  # not a terminal: wide enough for any table, never wrapped or cut


def console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=FILE_WIDTH, soft_wrap=True)


def plain(value):
    """A table cell shown as written: rich would read '[gds-cu13]' in a reason or '[0, 1]' in a docstring as
    markup and drop it."""
    from rich.text import Text

    return Text(str(value))
