"""Benchmark registry: a benchmark is a function of a :class:`bench.harness.State` plus what it declares beside
its body (nvbench's axes, grown): its axes, what a point holds, what a point costs in time, where it runs.

    @benchmark("h2d_pinned", family="transfer", cost=C.contiguous("h2d", True),
               axes=lambda c: {"size_bytes": c.transfer.sizes}, needs=contiguous_need("h2d"))
    def h2d_pinned(state): ...

``axes`` maps the resolved Hydra config to ``{axis: [values]}`` (the harness sweeps the cartesian product) or
to an explicit list of parameter dicts. ``cost(ctx) -> Work`` is the planner's model of one point on a target
(bench.harness.cost; every benchmark has one: the planner never guesses). ``supports(device)`` returns None when
the benchmark can run on that device, else the reason it cannot (recorded as a skipped point, nvbandwidth's
``filter()``). ``family`` names a registered family (bench.core.family), whose package holds the benchmark.
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
    cost: Optional[Callable] = None

    def points(self, cfg) -> list[dict]:
        spec = self.axes(cfg)
        if isinstance(spec, list):
            return [dict(p) for p in spec]
        keys = list(spec)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(list(spec[k]) for k in keys))]


REGISTRY: dict[str, Benchmark] = {}


def _any_device(device) -> Optional[str]:
    return None


def benchmark(name: str, *, family: str, cost: Callable, axes: Callable, supports: Callable = _any_device,
              needs: Optional[Callable] = None):
    """Register ``fn`` under ``name``; its docstring's first paragraph is the description. ``cost(ctx)``: the
    planner's model of one point (bench.harness.cost.Work). ``needs(state)``: what a point holds at once
    (bench.harness.Need), declared from the config and params (it may skip the point with a reason); None: nothing
    worth checking. A family that is not registered, or a missing cost model, is refused at import."""
    from bench.core.family import FAMILIES

    if family not in FAMILIES:
        raise ValueError(f"benchmark {name!r}: family {family!r} is not registered (bench.core.family; known: "
                         f"{', '.join(sorted(FAMILIES)) or 'none'})")
    if not callable(cost):
        raise ValueError(f"benchmark {name!r}: cost must be the planner's model of a point (bench.harness.cost)")

    def wrap(fn):
        if name in REGISTRY:
            raise ValueError(f"benchmark {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().split("\n\n")[0]
        REGISTRY[name] = Benchmark(name, family, fn, axes, " ".join(doc.split()), supports, needs, cost)
        return fn

    return wrap
