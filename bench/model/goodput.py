"""Goodput at a latency SLO: the highest request rate at which ``fleet.slo_attainment`` of the requests meet both a
time-to-first-token (TTFT) and a time-per-output-token (TPOT) target (DistServe's metric), from a discrete-event
replay of the requests over the fleet's prefill and decode instances.

Per request (seconds; costs are one GPU's, an instance of g GPUs runs them in 1/g the time, ideal tensor parallel):
- TTFT = waiting for a prefill instance + prefill of its new tokens after the cached ones + the exposed part of
  its tier load (the run's measured layer-wise overlap where it has one, bench.model.costs) + (disaggregated) the
  part of its KV handoff to the decode instance the prefill did not hide (bench.model.handoff). The first token
  comes when its KV is on the decode instance.
- TPOT = (time of its last token - time of its first) / (output tokens - 1): waiting for a decode slot, then one
  decode step per token at the batch its instance runs, t_d(b, sum of the batch's contexts) / g.
Disaggregated: each prefill instance serves one request at a time, first come first served on the first free one;
finished prefills join one FIFO that decode instances admit from at every step boundary, up to ``batch`` sequences
each (continuous batching). Colocated: one FIFO of arrivals; an instance at a step boundary runs the next waiting
prefill whenever it has a free decode slot (prefill first, vLLM's default without chunked prefill), else a decode
step; ``interference`` stretches both.
The handoff's link: a split whose handoff would load each GPU's link beyond its capacity has the link's rate as its
capacity (queueing on the link itself is not replayed). Not modelled: chunked prefill, preemption, routing imbalance
(the FIFOs are global: the best a router can do).

A rate above the fleet's capacity (the fluid rate of bench.model.fleet for that split) is never goodput, however
a finite replay's latencies look: the queues grow without bound there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from bench.core.units import seconds

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; pure Python keeps the model usable without it
    def njit(*a, **k):
        return (lambda f: f) if not a or not callable(a[0]) else a[0]


@njit(cache=True)
def prefill_pool(arrival, service, instances):
    """Finish time of each request (arrival order) on ``instances`` FCFS servers (first free one)."""
    free = np.zeros(instances)
    finish = np.empty(arrival.size)
    for i in range(arrival.size):
        j = 0
        for k in range(1, instances):
            if free[k] < free[j]:
                j = k
        start = max(arrival[i], free[j])
        free[j] = start + service[i]
        finish[i] = free[j]
    return finish


@njit(cache=True)
def _heap_swap(ht, hj, pos, a, b):
    """Swap heap slots ``a`` and ``b`` (times, instances) and keep ``pos`` (instance -> slot) in step."""
    ht[a], ht[b] = ht[b], ht[a]
    hj[a], hj[b] = hj[b], hj[a]
    pos[hj[a]] = a
    pos[hj[b]] = b


@njit(cache=True)
def _heap_set(ht, hj, pos, j, t):
    """Set instance ``j``'s next event time to ``t`` in the indexed binary min-heap (ht times, hj instances)."""
    i = pos[j]
    ht[i] = t
    while i > 0:  # up
        p = (i - 1) >> 1
        if ht[p] <= ht[i]:
            break
        _heap_swap(ht, hj, pos, p, i)
        i = p
    n = ht.size
    while True:  # down
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and ht[c + 1] < ht[c]:
            c += 1
        if ht[i] <= ht[c]:
            break
        _heap_swap(ht, hj, pos, c, i)
        i = c


@njit(cache=True)
def _steps_until(now, m, S, rmin, t_next, c0, c1, c2):
    """(k, end time) of the steps an instance of ``m`` sequences (context sum S) runs before anything can change
    its batch: its first sequence finishes after ``rmin`` steps; with a free slot it must stop at its first step
    boundary at or after ``t_next`` (the next arrival). Step i takes c0 + c1 m + c2 (S + i m) (contexts grow)."""
    base = max(c0 + c1 * m + c2 * S, 1e-15)
    a = 0.5 * c2 * m
    k = rmin
    if t_next < np.inf:
        D = t_next - now
        if D <= base:
            k = 1
        else:
            b = base - a
            kk = (D / b) if a <= 0.0 else (-b + math.sqrt(b * b + 4.0 * a * D)) / (2.0 * a)
            ka = max(1, int(math.ceil(kk - 1e-9)))
            while ka > 1 and now + (ka - 1) * base + a * (ka - 1) * (ka - 2) >= t_next:
                ka -= 1
            while now + ka * base + a * ka * (ka - 1) < t_next:
                ka += 1
            k = min(k, ka)
    return k, now + k * base + a * k * (k - 1)


@njit(cache=True)
def _finish_steps(j, k, now, active, ctx0, out_tokens, last):
    """Give each sequence of instance j ``k`` tokens; the finished ones leave (their last token at ``now``).
    ``active``: the instances' decode state (ids, tokens left, sequences, summed context), updated in place."""
    ids, rem, nact, sumctx = active
    m = nact[j]
    sumctx[j] += m * k
    s = 0
    while s < m:
        rem[j, s] -= k
        if rem[j, s] <= 0:
            r = ids[j, s]
            last[r] = now
            sumctx[j] -= ctx0[r] + out_tokens[r] - 1
            m -= 1
            ids[j, s] = ids[j, m]
            rem[j, s] = rem[j, m]
        else:
            s += 1
    nact[j] = m


@njit(cache=True)
def _min_rem(j, rem, nact):
    r = rem[j, 0]
    for s in range(1, nact[j]):
        if rem[j, s] < r:
            r = rem[j, s]
    return r


@njit(cache=True)
def decode_pool(ready, out_tokens, ctx0, instances, batch, c0, c1, c2):
    """Time of the last token of each request whose first token came at ``ready`` (seconds), decoded on
    ``instances`` continuous-batching instances of at most ``batch`` sequences, step = c0 + c1 b + c2 sum(ctx).
    Exact step by step; runs of steps in which no batch can change are advanced in one go."""
    n = ready.size
    last = ready.copy()
    order = np.argsort(ready, kind="mergesort")
    ids = np.empty((instances, batch), np.int64)
    rem = np.empty((instances, batch), np.int64)
    nact = np.zeros(instances, np.int64)
    steps = np.zeros(instances, np.int64)  # steps in the instance's current run
    sumctx = np.zeros(instances)
    ht, hj, pos = np.full(instances, np.inf), np.arange(instances), np.arange(instances)  # run ends, a heap
    idle = instances
    q = 0  # next request to admit (order index); requests order[q:arrived] wait
    arrived = 0
    while True:
        j = hj[0]
        t_arr = ready[order[arrived]] if arrived < n else np.inf
        if t_arr == np.inf and ht[0] == np.inf:
            break
        if t_arr <= ht[0]:  # an arrival: an idle instance takes it at once
            now = t_arr
            arrived += 1
            while q < arrived and out_tokens[order[q]] <= 1:
                q += 1
            if q < arrived and idle > 0:
                k = -1
                for kk in range(instances):
                    if nact[kk] == 0:
                        k = kk
                        break
                r = order[q]
                q += 1
                ids[k, 0] = r
                rem[k, 0] = out_tokens[r] - 1
                nact[k] = 1
                idle -= 1
                sumctx[k] = ctx0[r]
                t_next = ready[order[arrived]] if arrived < n else np.inf
                steps[k], t_end = _steps_until(now, 1, sumctx[k], rem[k, 0], t_next if batch > 1 else np.inf,
                                               c0, c1, c2)
                _heap_set(ht, hj, pos, k, t_end)
            continue
        now = ht[0]
        _finish_steps(j, steps[j], now, (ids, rem, nact, sumctx), ctx0, out_tokens, last)
        m = nact[j]
        while m < batch and q < arrived:
            r = order[q]
            q += 1
            if out_tokens[r] <= 1:
                continue
            ids[j, m] = r
            rem[j, m] = out_tokens[r] - 1
            sumctx[j] += ctx0[r]
            m += 1
        nact[j] = m
        if m == 0:
            idle += 1
            _heap_set(ht, hj, pos, j, np.inf)
        else:
            t_next = ready[order[arrived]] if (arrived < n and m < batch) else np.inf
            steps[j], t_end = _steps_until(now, m, sumctx[j], _min_rem(j, rem, nact), t_next, c0, c1, c2)
            _heap_set(ht, hj, pos, j, t_end)
    return last


@njit(cache=True)
def colocated_pool(arrival, service, out_tokens, ctx0, instances, batch, coef, stretch):
    """(first token, last token) times of each request on ``instances`` instances that each run a waiting prefill
    (``service`` seconds) whenever they have a free decode slot, else decode steps (all times x ``stretch``);
    ``coef``: the decode step's (seconds, per sequence, per sequence-context token)."""
    c0, c1, c2 = coef
    n = arrival.size
    first = np.empty(n)
    last = np.empty(n)
    ids = np.empty((instances, batch), np.int64)
    rem = np.empty((instances, batch), np.int64)
    nact = np.zeros(instances, np.int64)
    steps = np.zeros(instances, np.int64)
    sumctx = np.zeros(instances)
    pending = np.full(instances, -1, np.int64)  # the request an instance is prefilling, or -1 (decoding / idle)
    ht, hj, pos = np.full(instances, np.inf), np.arange(instances), np.arange(instances)
    d0, d1, d2 = c0 * stretch, c1 * stretch, c2 * stretch
    q = 0
    arrived = 0
    while True:
        j = hj[0]
        t_arr = arrival[arrived] if arrived < n else np.inf
        if t_arr == np.inf and ht[0] == np.inf:
            break
        if t_arr <= ht[0]:
            now = t_arr
            arrived += 1
            for k in range(instances):
                if ht[pos[k]] == np.inf and q < arrived:  # idle: nothing active, nothing pending
                    r = q
                    q += 1
                    pending[k] = r
                    _heap_set(ht, hj, pos, k, now + service[r] * stretch)
                    break
            continue
        now = ht[0]
        r = pending[j]
        if r >= 0:  # a prefill ended: its first token
            pending[j] = -1
            first[r] = now
            last[r] = now
            m = nact[j]
            if out_tokens[r] > 1:
                ids[j, m] = r
                rem[j, m] = out_tokens[r] - 1
                sumctx[j] += ctx0[r]
                nact[j] = m + 1
        else:
            _finish_steps(j, steps[j], now, (ids, rem, nact, sumctx), ctx0, out_tokens, last)
        m = nact[j]
        if q < arrived and m < batch:
            r = q
            q += 1
            pending[j] = r
            _heap_set(ht, hj, pos, j, now + service[r] * stretch)
        elif m > 0:
            t_next = arrival[arrived] if (arrived < n and m < batch) else np.inf
            steps[j], t_end = _steps_until(now, m, sumctx[j], _min_rem(j, rem, nact), t_next, d0, d1, d2)
            _heap_set(ht, hj, pos, j, t_end)
        else:
            _heap_set(ht, hj, pos, j, np.inf)
    return first, last


@dataclass
class Requests:
    """The replayed requests, in arrival order: ``unit_arrival`` is each arrival time at a mean rate of 1 request/s
    (a Poisson process, or a trace's timestamps rescaled); at rate r the arrivals are unit_arrival / r."""

    unit_arrival: np.ndarray
    out_tokens: np.ndarray  # output tokens (the first comes from the prefill)
    ctx0: np.ndarray  # context when decoding starts: input tokens + the first output token
    arrivals_from: str

    @classmethod
    def build(cls, input_tokens, output_tokens, timestamps_s=None, seed: int = 0) -> "Requests":
        n = len(input_tokens)
        if timestamps_s is not None and n > 1 and np.ptp(timestamps_s) > 0:
            ts = np.asarray(timestamps_s, float)
            if np.any(np.diff(ts) < 0):
                raise ValueError("requests must be in timestamp order")
            unit = (ts - ts[0]) * ((n - 1) / float(ts[-1] - ts[0]))
            how = "the trace's timestamps, rescaled to each rate (its bursts kept)"
        else:
            unit = np.cumsum(np.random.default_rng(seed).exponential(1.0, n))
            how = "a Poisson process at each rate"
        o = np.maximum(np.asarray(output_tokens, np.int64), 1)
        return cls(unit, o, np.asarray(input_tokens, float) + 1.0, how)


@dataclass
class Pool:
    """The fleet the requests run on: instances of ``gpus_per_instance`` GPUs, decode step coefficients (one GPU's
    seconds: c0 + c1 b + c2 sum(ctx)), the decode batch cap, and the SLO."""

    gpus: int
    gpus_per_instance: int
    mode: str  # disaggregated | colocated
    batch: int
    step_coef: tuple
    ttft_s: Optional[float]
    tpot_s: Optional[float]
    attainment: float
    prefill_fraction: Optional[float] = None
    interference: float = 0.0
    link_rps_per_gpu: float = math.inf  # disaggregated: requests/s one GPU's link carries (the handoff)

    @property
    def instances(self) -> int:
        return self.gpus // self.gpus_per_instance


@dataclass
class Outcome:
    """One replay at one rate and split: per-request latencies (seconds) and the shares meeting each target."""

    rate: float
    prefill_instances: int
    ttft: np.ndarray
    tpot: np.ndarray
    ttft_ok: float
    tpot_ok: float
    both_ok: float


@dataclass
class Goodput:
    config: str
    capacity: float  # requests/s of the best split with no SLO (the fluid rate at instance granularity)
    goodput: float  # requests/s meeting the SLO at the attainment target
    prefill_instances: Optional[int]
    decode_instances: Optional[int]
    at_goodput: Optional[Outcome]
    reason: str = ""
    curve: dict = field(default_factory=dict)

    def as_dict(self, gpus: int) -> dict:
        o = self.at_goodput
        pct = lambda a, q: float(np.percentile(a, q)) if o is not None and a.size else None  # noqa: E731
        return {"config": self.config, "capacity_rps": self.capacity, "goodput_rps": self.goodput,
                "goodput_per_gpu": self.goodput / gpus, "prefill_instances": self.prefill_instances,
                "decode_instances": self.decode_instances, "reason": self.reason,
                "attainment": None if o is None else o.both_ok,
                "ttft_miss": None if o is None else 1 - o.ttft_ok, "tpot_miss": None if o is None else 1 - o.tpot_ok,
                "ttft_p50_s": pct(o.ttft if o else None, 50), "ttft_p90_s": pct(o.ttft if o else None, 90),
                "tpot_p50_s": pct(o.tpot if o else None, 50), "tpot_p90_s": pct(o.tpot if o else None, 90),
                "curve": self.curve}


class Replay:
    """Replays one configuration's requests (its per-request prefill seconds on one GPU) at any rate and split;
    what does not depend on the rate (service times, the sorted order) is computed once."""

    def __init__(self, reqs: Requests, prefill_gpu_s, pool: Pool, handoff_s=None):
        self.r, self.pool = reqs, pool
        g = pool.gpus_per_instance
        self.service = np.asarray(prefill_gpu_s, float) / g
        # disaggregated: each request's exposed handoff (seconds on its instance, after its prefill)
        self.handoff = np.zeros_like(self.service) if handoff_s is None else np.asarray(handoff_s, float)
        self.coef = tuple(float(c) / g for c in pool.step_coef)
        self._prefill_cache: dict = {}

    def _ttft(self, rate: float, kp: int):
        key = (rate, kp)
        if key not in self._prefill_cache:
            arr = self.r.unit_arrival / rate
            first = prefill_pool(arr, self.service, kp) if kp > 0 else arr.copy()  # kp = 0: no prefill left
            self._prefill_cache = {key: (arr, first)}
        return self._prefill_cache[key]

    def run(self, rate: float, kp: int = 0, need_tpot: bool = True) -> Outcome:
        """One replay at ``rate`` requests/s with ``kp`` prefill instances (disaggregated; ignored colocated)."""
        p = self.pool
        o = self.r.out_tokens
        if p.mode == "colocated":
            arr = self.r.unit_arrival / rate
            first, last = colocated_pool(arr, self.service, o, self.r.ctx0, p.instances, p.batch, self.coef,
                                         1.0 / (1.0 - p.interference))
            ttft = first - arr
        else:
            arr, first = self._ttft(rate, kp)
            first = first + self.handoff
            ttft = first - arr
            if need_tpot:
                last = decode_pool(first, o, self.r.ctx0, p.instances - kp, p.batch, *self.coef)
            else:
                last = first
        tpot = np.where(o > 1, (last - first) / np.maximum(o - 1, 1), 0.0)
        ok_t = ttft <= p.ttft_s * (1 + 1e-12) if p.ttft_s else np.ones(ttft.size, bool)
        ok_p = tpot <= p.tpot_s * (1 + 1e-12) if (p.tpot_s and need_tpot) else np.ones(ttft.size, bool)
        return Outcome(rate, kp, ttft, tpot, float(ok_t.mean()), float(ok_p.mean()), float((ok_t & ok_p).mean()))


def capacity(pool: Pool, p_gpu_s: float, d_gpu_s: float, kp: int) -> float:
    """Fluid request rate of ``kp`` prefill instances and the rest on decode (or colocated): bench.model.fleet's
    arithmetic at instance granularity."""
    g = pool.gpus_per_instance
    if pool.mode == "colocated":
        return pool.instances * g * (1 - pool.interference) / (p_gpu_s + d_gpu_s)
    pre = kp * g / p_gpu_s if p_gpu_s > 0 else math.inf
    # with a handoff every request's KV leaves a prefill instance: none carries nothing (bench.model.fleet)
    link = pool.link_rps_per_gpu * min(kp, pool.instances - kp) * g if math.isfinite(pool.link_rps_per_gpu) \
        else math.inf
    return min(pre, (pool.instances - kp) * g / d_gpu_s, link)


def search(name: str, rp: Replay, p_gpu_s: float, d_gpu_s: float, rel_tol: float = 0.005,
           curve_points: int = 12) -> Goodput:
    """The highest rate (requests/s) at which the pool meets its SLO for ``attainment`` of the requests, and the
    split that gets it: bisection on the rate; at each rate the fewest prefill instances whose TTFT share meets the
    target (a cheap prefill-only replay), then the decode replay for that split and the next two."""
    pool = rp.pool
    target = pool.attainment
    K = pool.instances
    if pool.mode == "colocated":
        splits = [0]
    elif pool.prefill_fraction is not None:
        splits = [min(max(0 if p_gpu_s == 0 else 1, int(round(K * pool.prefill_fraction))), K - 1)]
    else:  # no prefill instance only when no request needs a prefill (every token reused)
        splits = list(range(0 if p_gpu_s == 0 else 1, K))
    caps = {kp: capacity(pool, p_gpu_s, d_gpu_s, kp) for kp in splits}
    cap = max(caps.values())
    best_kp = max(caps, key=caps.get)
    tpot_needed = bool(pool.tpot_s)

    def feasible(rate: float) -> Optional[Outcome]:
        cand = [k for k in splits if caps[k] >= rate * (1 - 1e-12)]
        if not cand:
            return None
        if pool.mode == "colocated":
            o = rp.run(rate)
            return o if o.both_ok >= target else None
        lo, hi = 0, len(cand) - 1
        if pool.ttft_s:  # fewest prefill instances whose TTFT share meets the target (it grows with them)
            if rp.run(rate, cand[hi], need_tpot=False).ttft_ok < target:
                return None
            while lo < hi:
                mid = (lo + hi) // 2
                if rp.run(rate, cand[mid], need_tpot=False).ttft_ok >= target:
                    hi = mid
                else:
                    lo = mid + 1
        for k in cand[lo:lo + (3 if tpot_needed else 1)]:
            o = rp.run(rate, k, need_tpot=tpot_needed)
            if o.both_ok >= target:
                return o
        return None

    best = feasible(cap)
    if best is not None:
        good, at = cap, best
    else:
        lo_rate, hi_rate = cap * 1e-3, cap
        at = feasible(lo_rate)
        if at is None:
            why = _why_unreachable(rp, lo_rate, splits, best_kp)
            return Goodput(name, cap, 0.0, None, None, None, why, _curve(rp, cap, best_kp, curve_points))
        while (hi_rate - lo_rate) > rel_tol * hi_rate:
            mid = math.sqrt(lo_rate * hi_rate) if hi_rate / lo_rate > 4 else 0.5 * (lo_rate + hi_rate)
            o = feasible(mid)
            if o is not None:
                lo_rate, at = mid, o
            else:
                hi_rate = mid
        good = lo_rate
    kp = at.prefill_instances if pool.mode != "colocated" else None
    return Goodput(name, cap, good, kp, None if kp is None else K - kp, at, "",
                   _curve(rp, cap, kp if kp is not None else 0, curve_points))


def _why_unreachable(rp: Replay, rate: float, splits: list, kp: int) -> str:
    """Why even a nearly idle fleet misses the SLO: the targets against the unloaded latencies."""
    pool = rp.pool
    q = 100 * pool.attainment
    parts = []
    if pool.ttft_s:
        handoff = rp.handoff if pool.mode == "disaggregated" else np.zeros_like(rp.service)
        t = float(np.percentile(rp.service + handoff, q))
        if t > pool.ttft_s:
            what = "an idle prefill alone takes" if not handoff.any() else \
                (f"an idle prefill and its KV handoff (the handoff {seconds(float(np.percentile(handoff, q)))} at "
                 f"p{q:.0f}) take")
            parts.append(f"{what} {seconds(t)} at p{q:.0f}, over the {seconds(pool.ttft_s)} TTFT target")
    if pool.tpot_s:
        o = rp.run(rate, kp if pool.mode != "colocated" else 0)
        t = float(np.percentile(o.tpot, q))
        if t > pool.tpot_s:
            parts.append(f"decode takes {seconds(t)} per token at p{q:.0f} even unloaded, over the "
                         f"{seconds(pool.tpot_s)} TPOT target")
    return "; ".join(parts) or f"fewer than {pool.attainment:.0%} of requests meet both targets even unloaded"


def _curve(rp: Replay, cap: float, kp: int, points: int) -> dict:
    """Attainment of both targets (and each) against the offered rate, at split ``kp``, up to the capacity."""
    rates = cap * np.linspace(1.0 / points, 1.0, points)
    rows = [rp.run(float(r), kp) for r in rates]
    return {"rate_rps": rates.tolist(), "attainment": [o.both_ok for o in rows],
            "ttft_ok": [o.ttft_ok for o in rows], "tpot_ok": [o.tpot_ok for o in rows], "prefill_instances": kp}


def ttft_breaks(prefill_gpu_s_at, hits, g: int, ttft_s: float, attainment: float) -> dict:
    """Per tier: the unloaded TTFT quantile (``attainment``) at each hit rate of ``hits`` and the lowest hit rate at
    which it exceeds ``ttft_s``. ``prefill_gpu_s_at(tier, h)`` gives per-request prefill seconds on one GPU."""
    out = {}
    q = 100 * attainment
    for tier, fn in prefill_gpu_s_at.items():
        tq = [float(np.percentile(fn(h), q)) / g for h in hits]
        breaks = next((float(h) for h, t in zip(hits, tq) if t > ttft_s), None)
        out[tier] = {"ttft_quantile_s": tq, "breaks_at_hit_rate": breaks,
                     "meets_at_zero": tq[0] <= ttft_s}
    return out
