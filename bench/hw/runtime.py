"""The seam through which the suite reaches CUDA and the host clock: ``torch.cuda`` (or a test's simulated timeline,
tests/simcuda.py) and perf_counter. Every clock, synchronize and memory query goes through :func:`runtime`, so the
CUDA branch of the timing code runs, and is tested, on a machine without a GPU."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass
class Runtime:
    """What the clocks call: a ``torch.cuda``-like module and the host clock (seconds, float and ns)."""

    cuda: Any
    now: Callable[[], float] = time.perf_counter
    now_ns: Callable[[], int] = time.perf_counter_ns


_RUNTIME: Optional[Runtime] = None


def runtime() -> Runtime:
    """The runtime in use: real torch.cuda and perf_counter unless a test installed another."""
    global _RUNTIME
    if _RUNTIME is None:
        import torch

        _RUNTIME = Runtime(torch.cuda)
    return _RUNTIME


@contextmanager
def use_runtime(rt: Runtime):
    """Install ``rt`` for the body (tests: a simulated CUDA timeline); the previous runtime comes back after."""
    global _RUNTIME
    old, _RUNTIME = _RUNTIME, rt
    try:
        yield rt
    finally:
        _RUNTIME = old
