"""Benchmark registry: a benchmark is a function of a :class:`bench.harness.State` plus declared axes.

    @benchmark("h2d_pinned", family="transfer", axes=lambda c: {"size_bytes": c.transfer.sizes})
    def h2d_pinned(state): ...

``axes`` maps the resolved Hydra config to ``{axis: [values]}`` (the harness sweeps the cartesian product) or
to an explicit list of parameter dicts. ``supports(device)`` returns None when the benchmark can run on that
device, else the reason it cannot (recorded as a skipped point, nvbandwidth's ``filter()``).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Optional



@dataclass(frozen=True)
class Benchmark:
    """A benchmark: its function, declared axes, what one point needs (``needs(state) -> bench.harness.Need``: the
    device, host and file bytes it will hold at once, from its config and params alone: the harness checks them
    before the function runs and the planner reads them without running it), and where it can run."""

    name: str
    family: str
    fn: Callable
    axes: Callable
    description: str
    supports: Callable
    needs: Optional[Callable] = None

    def points(self, cfg) -> list[dict]:
        spec = self.axes(cfg)
        if isinstance(spec, list):
            return [dict(p) for p in spec]
        keys = list(spec)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(list(spec[k]) for k in keys))]


REGISTRY: dict[str, Benchmark] = {}


def _any_device(device) -> Optional[str]:
    return None


def benchmark(name: str, *, family: str, axes: Callable, supports: Callable = _any_device,
              needs: Optional[Callable] = None):
    """Register ``fn`` under ``name``; its docstring's first paragraph is the description. ``needs(state)``: what a
    point holds at once (bench.harness.Need), declared from the config and params (it may skip the point with a
    reason); None: nothing worth checking."""

    def wrap(fn):
        if name in REGISTRY:
            raise ValueError(f"benchmark {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().split("\n\n")[0]
        REGISTRY[name] = Benchmark(name, family, fn, axes, " ".join(doc.split()), supports, needs)
        return fn

    return wrap
