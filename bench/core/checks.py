"""Per-family value checks, registered next to the config section they check; run only for selected families."""
from __future__ import annotations

from typing import Callable

from bench.core.errors import UserError

CHECKS: list[tuple[str, Callable]] = []


def validator(family: str) -> Callable:
    """Register ``fn(cfg)`` for ``family``; it raises bench.core.errors.UserError for a bad value."""

    def wrap(fn: Callable) -> Callable:
        CHECKS.append((family, fn))
        return fn

    return wrap


def check(ok: bool, key: str, value, rule: str) -> None:
    if not ok:
        raise UserError(f"{key}={_typed(value)} is not allowed: {rule}")


def _typed(value) -> str:
    """A value as a user would type it: 1e+12 rather than 1000000000000.0, text quoted."""
    if isinstance(value, float) and float(f"{value:g}") == value:
        return f"{value:g}"
    return repr(value)


def positive_ints(key: str, values, allow_empty: bool = False) -> None:
    check(allow_empty or len(values) > 0, key, list(values), "give at least one value")
    for v in values:
        check(isinstance(v, int) and not isinstance(v, bool) and v > 0, key, v, "every value must be an integer > 0")
