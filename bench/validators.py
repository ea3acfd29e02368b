"""Per-family value checks, registered next to the config section they check; run only for selected families."""
from __future__ import annotations

from typing import Callable

CHECKS: list[tuple[str, Callable]] = []


def validator(family: str) -> Callable:
    """Register ``fn(cfg)`` for ``family``; it raises bench.errors.UserError for a bad value."""

    def wrap(fn: Callable) -> Callable:
        CHECKS.append((family, fn))
        return fn

    return wrap
