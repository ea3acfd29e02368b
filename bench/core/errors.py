"""User-facing errors: one line, exit code 2, never a traceback."""
from __future__ import annotations

import sys

EXIT_USAGE = 2


class UserError(Exception):
    """A mistake in the user's input (bad value, unknown name, missing path).

    The message is printed as one line prefixed with ``error:``; the process exits with code 2.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class Skip(Exception):
    """A benchmark point that cannot run here (too big, unsupported, no space): recorded as status=skipped with
    this message as the reason. Raise it (or ``state.skip``) anywhere below a benchmark function."""


def fail(err: UserError) -> "NoReturn":  # noqa: F821
    print(f"error: {err}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def allowed(what: str, value, choices) -> UserError:
    """``unknown <what> 'value'; allowed: a, b, c`` as a UserError."""
    choices = sorted(str(c) for c in choices)
    return UserError(f"unknown {what} {value!r}; allowed: {', '.join(choices) or '(none)'}")
