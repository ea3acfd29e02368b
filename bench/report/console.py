"""The console every command prints its tables through: on a terminal rich's own width; elsewhere (a redirected
run, a SLURM job log, a pipe) $COLUMNS or 120 columns. A table that does not fit wraps its cells (fold), never
cuts a number to '…'; ``wide`` (a command's --wide) gives every table its natural width instead."""
from __future__ import annotations

import os
import sys

FILE_WIDTH = 100_000  # --wide: wide enough for any table, never wrapped
MIN_CELL = 28  # a cell up to this wide is never wrapped (when the table can fit at all)
PIPE_WIDTH = 120  # not a terminal and no $COLUMNS: a terminal's worth (lines a person can read in a log)


def console(stderr: bool = False, wide: bool = False):
    from rich.console import Console
    from rich.table import Table

    class Folding(Console):
        """rich's Console, whose tables wrap a cell that does not fit instead of cutting it with an ellipsis."""

        def print(self, *objects, **kw):
            for o in objects:
                if isinstance(o, Table):
                    _fit(o, self.width)
            super().print(*objects, **kw)

    stream = sys.stderr if stderr else sys.stdout
    if wide:
        return Folding(stderr=stderr, width=FILE_WIDTH, soft_wrap=True)
    if stream.isatty():
        return Folding(stderr=stderr)
    cols = os.environ.get("COLUMNS", "")
    return Folding(stderr=stderr, width=int(cols) if cols.isdigit() and int(cols) >= 40 else PIPE_WIDTH)


def _fit(table, width: int) -> None:
    """Column widths for ``table`` within ``width``: each column at least its longest cell (or header word), so
    numbers and names stay whole; the room left goes to the columns with longer text, which wrap. A table whose
    cells cannot all fit that way is left to rich, every cell folded (wrapped), none cut."""
    for c in table.columns:
        c.overflow = "fold"
    cells = [[str(x) for x in c._cells] for c in table.columns]
    words = lambda text: [len(w) for w in text.split()] or [0]  # noqa: E731
    natural = [max([len(str(c.header))] + [len(x) for x in xs]) for c, xs in zip(table.columns, cells)]
    longest = [max([len(x) for x in xs] + [0]) for xs in cells]
    need = [max(words(str(c.header)) + ([n] if n <= MIN_CELL else [max(words(x)) for x in xs]))
            for c, xs, n in zip(table.columns, cells, longest)]
    room = width - 3 * len(need) - 1
    if sum(natural) <= room or sum(need) > room:
        return
    spare, extra = room - sum(need), [n - w for n, w in zip(natural, need)]
    for c, w, e in zip(table.columns, need, extra):
        c.width = w + (spare * e // sum(extra) if sum(extra) else 0)


def plain(value):
    """A table cell shown as written: rich would read '[gds-cu13]' in a reason or '[0, 1]' in a docstring as
    markup and drop it."""
    from rich.text import Text

    return Text(str(value))
