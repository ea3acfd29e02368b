"""Which token rows a sparse-attention decode step reads from the warm tier: the access pattern of "fetch on demand".

A step needs ``k`` rows of a pool of ``pool_rows``. Localities (the ``warm.locality`` axis):

- ``uniform``: k distinct rows drawn uniformly (top-k over a long context scatters);
- ``runs_<R>``: k/R runs of R consecutive rows (chunked selection: ShadowKV and Quest select chunks of tokens);
- ``repeat_<F>``: a fraction F of the step's rows were selected by the previous step too and stay in HBM (ShadowKV
  reports ~60% of chunks repeating between steps); only the other (1 - F) k rows are fetched, the kept ones are
  copied within HBM from the previous step's buffer.

A step's destination holds its fetched rows first (sorted by pool row, so that contiguous rows are one copy) and its
kept rows after them. Steps come as a cycle of ``steps`` selections after a warm-start selection ``x0``: step 1's
kept rows come from ``x0``, step s's from step s-1, so the cycle can be replayed in order any number of times.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

LOCALITY_RE = re.compile(r"^(uniform|runs_(\d+)|repeat_(0(\.\d+)?|1(\.0+)?))$")


def parse_locality(value: str) -> tuple[str, float]:
    """('uniform', 0) | ('runs', R) | ('repeat', F); ValueError for anything else."""
    m = LOCALITY_RE.match(str(value))
    if not m:
        raise ValueError(f"locality {value!r}: uniform, runs_<R> (R >= 1) or repeat_<F> (0 <= F < 1)")
    if m.group(2):
        r = int(m.group(2))
        if r < 1:
            raise ValueError(f"locality {value!r}: runs_<R> needs R >= 1")
        return "runs", r
    if m.group(3):
        f = float(m.group(3))
        if not 0 <= f < 1:
            raise ValueError(f"locality {value!r}: repeat_<F> needs 0 <= F < 1")
        return "repeat", f
    return "uniform", 0


def runs_of(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first pool row, length, first destination row) of each maximal run of consecutive pool rows in ``rows``
    (sorted ascending, as a step's fetched rows are), destination rows counted from 0."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return (np.zeros(0, np.int64),) * 3
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    lengths = np.diff(np.concatenate([starts, [len(rows)]]))
    return rows[starts], lengths, starts


def fetched_rows(k: int, locality: str) -> int:
    """Rows a step of ``k`` fetches from the pool (repeat_<F>: the (1 - F) k not kept from the previous step)."""
    kind, arg = parse_locality(locality)
    return k - int(round(arg * k)) if kind == "repeat" else k


def copy_calls(k: int, locality: str) -> int:
    """The most contiguous runs a step's fetched rows can form (a copy per run): k / R for runs_<R>, else every
    fetched row (scattered rows that happen to be adjacent merge, so a step may need fewer)."""
    kind, arg = parse_locality(locality)
    n = fetched_rows(k, locality)
    return max(1, n // int(arg)) if kind == "runs" else n


@dataclass
class Step:
    """One step: ``order`` (the k pool rows in destination order: ``fetched`` rows first, then the kept ones) and
    ``keep_src`` (each kept row's position in the previous step's destination)."""

    order: np.ndarray
    n_fetch: int
    keep_src: np.ndarray

    @property
    def fetched(self) -> np.ndarray:
        return self.order[:self.n_fetch]


@dataclass
class StepPlan:
    pool_rows: int
    k: int
    locality: str
    x0: np.ndarray  # the warm-start selection (step 1's previous step)
    steps: list = field(default_factory=list)

    @property
    def n_fetch(self) -> int:
        return self.steps[0].n_fetch

    @property
    def n_keep(self) -> int:
        return self.k - self.n_fetch

    def max_runs(self) -> int:
        """The most contiguous runs any step's fetched rows form (copy calls per step of a copy per run)."""
        return max(len(runs_of(s.fetched)[0]) for s in self.steps)


def _uniform(rng, pool_rows: int, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """k distinct rows, none in ``exclude``, sorted."""
    if exclude is None or len(exclude) == 0:
        return np.sort(rng.choice(pool_rows, size=k, replace=False)).astype(np.int64)
    out = np.zeros(0, np.int64)
    while len(out) < k:
        draw = rng.choice(pool_rows, size=min(pool_rows, 2 * (k - len(out)) + 16), replace=False)
        out = np.union1d(out, np.setdiff1d(draw, exclude))
    return np.sort(rng.choice(out, size=k, replace=False)).astype(np.int64)


def _runs(rng, pool_rows: int, k: int, r: int) -> np.ndarray:
    slots = pool_rows // r
    starts = np.sort(rng.choice(slots, size=k // r, replace=False)).astype(np.int64) * r
    return (starts[:, None] + np.arange(r, dtype=np.int64)[None, :]).reshape(-1)


def plan_steps(pool_rows: int, k: int, locality: str, steps: int, seed: int) -> StepPlan:
    """The cycle of ``steps`` selections of ``k`` rows out of ``pool_rows`` for ``locality`` (module docstring).
    ValueError when the pool is too small for it (a step must leave at least three quarters of the pool out)."""
    kind, arg = parse_locality(locality)
    if k < 1 or steps < 1:
        raise ValueError(f"k={k} rows and steps={steps} must be >= 1")
    if 4 * k > pool_rows:
        raise ValueError(f"k={k} rows of a pool of {pool_rows}: a step would select over a quarter of the pool")
    if kind == "runs" and (k % int(arg) or int(arg) > k):
        raise ValueError(f"locality {locality}: k={k} rows is not a whole number of runs of {int(arg)}")
    rng = np.random.default_rng(seed)
    none = np.zeros(0, np.int64)
    if kind == "uniform":
        x0 = _uniform(rng, pool_rows, k)
        return StepPlan(pool_rows, k, locality, x0, [Step(_uniform(rng, pool_rows, k), k, none) for _ in range(steps)])
    if kind == "runs":
        r = int(arg)
        return StepPlan(pool_rows, k, locality, _runs(rng, pool_rows, k, r),
                        [Step(_runs(rng, pool_rows, k, r), k, none) for _ in range(steps)])
    n_fetch = fetched_rows(k, locality)
    n_keep = k - n_fetch
    x0 = _uniform(rng, pool_rows, k)
    prev, plan = x0, StepPlan(pool_rows, k, locality, x0)
    for _ in range(steps):
        keep_src = np.sort(rng.choice(k, size=n_keep, replace=False)).astype(np.int64)
        new = _uniform(rng, pool_rows, n_fetch, exclude=prev)
        order = np.concatenate([new, prev[keep_src]])
        plan.steps.append(Step(order, n_fetch, keep_src))
        prev = order
    return plan
