"""The seed's decomposition for real agent data (``python -m bench workload``): per request and in total, cache
reads, cache writes (input computed and written), uncached input where a log tells it apart, output; hit rate,
reads per write, input:output; the spread across conversations; reuse time (for each hit block, the time since
that block was last used); context growth per turn; think time; the sub-agents' share.

Hits are an unlimited cache's, scoped as the data says (per conversation for local ids, its sub-agents sharing
them; one namespace for global ids): a request hits the longest prefix of its block ids already seen in its scope.
``shared_prefix="warm"`` counts the tools + system prompt every conversation shares in production as cached before
a conversation starts (its first request's first blocks); ``cold`` (the default) takes the data as it is. Usage
logs report what they logged (reads, writes, uncached); their implied blocks replay the same reads.
Tokens are counts; times are seconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from numba import njit

from bench.model.traces.table import RequestTable

# the claims this suite checks (an analysis of ~20 billion tokens of Claude Code sessions, quoted in industry talks)
SEED = {"hit_rate": 0.972, "read_write_ratio": 11.7, "input_output_ratio": 100.0,
        "persistence": "minutes to hours"}


@njit(cache=True)
def _hits(blocks, off, order, conv, t, bt, local, warm_blocks, width):
    """Per request (in ``order``): hit blocks of the longest prefix already seen in its scope; per hit block the
    seconds since that block was last used (nan for a warm shared prefix). ``local``: ids restart per conversation
    (the requests of a conversation are contiguous in ``order``); ids are dense in [0, width)."""
    n = len(order)
    hit = np.zeros(n, np.int64)
    last = np.full(width, -np.inf)
    touched = np.empty(2 * width + 1, np.int64)  # a scope's blocks, forgotten when the next scope starts
    nt = 0
    reuse = np.empty(len(blocks), np.float32)
    nr = 0
    cur = -2
    for k in range(n):
        i = order[k]
        s, e = off[i], off[i + 1]
        if local and conv[i] != cur:  # a new scope: forget the last one's blocks
            for j in range(nt):
                last[touched[j]] = -np.inf
            nt = 0
            cur = conv[i]
            m = min(warm_blocks[i], e - s)
            for j in range(s, s + m):  # warm: the shared prefix was cached before the conversation
                last[blocks[j]] = np.nan
                touched[nt] = blocks[j]
                nt += 1
        h = 0
        for j in range(s, e):
            lu = last[blocks[j]]
            if lu == -np.inf:
                break
            h += 1
            reuse[nr] = t[i] - lu
            nr += 1
        hit[i] = h
        for j in range(s, e):
            b = blocks[j]
            if local and last[b] == -np.inf:
                touched[nt] = b
                nt += 1
            last[b] = t[i]
    return hit, reuse[:nr]


def dense_ids(t: RequestTable) -> tuple[np.ndarray, int]:
    """Block ids as dense indices: local ids (small non-negative per conversation) kept as they are, or made dense
    per scope (bench.model.traces.table.dense_blocks)."""
    if t.scope == "local" and len(t.blocks) and int(t.blocks.min()) >= 0 and int(t.blocks.max()) < (1 << 26):
        return t.blocks, int(t.blocks.max()) + 1
    return t.dense()


@dataclass(frozen=True)
class Decomposition:
    """Per request: ``read`` (hit tokens), ``write`` (input computed and written; -1 where a log does not tell),
    ``uncached`` (input neither read nor written to cache, where a log tells), ``output``; ``logged``: the split is
    the log's own (usage logs), else the unlimited cache's. ``reuse_s``: per hit block, seconds since its last use."""

    read: np.ndarray
    write: np.ndarray
    uncached: np.ndarray
    output: np.ndarray
    simulated_hit_tokens: np.ndarray
    reuse_s: np.ndarray
    reuse_conversation: Optional[np.ndarray]  # the conversation of each reuse time (None: not asked for)
    logged: bool


def decompose(t: RequestTable, shared_prefix: str = "cold", tags: bool = True) -> Decomposition:
    """Each request's cache reads, writes and uncached input, and the reuse times of its hits (module docstring);
    ``tags``: each reuse time's conversation too (per-conversation reuse figures)."""
    ids, width = dense_ids(t)
    local = t.scope == "local"
    order = np.lexsort((np.arange(len(t)), t.time_s, t.conversation)) if local else \
        np.argsort(t.time_s, kind="stable")
    warm = np.zeros(len(t), np.int64)
    if shared_prefix == "warm" and t.shared_prefix_tokens is not None:
        warm = t.shared_prefix_tokens[np.maximum(t.conversation, 0)] // t.block_tokens
    hit, reuse = _hits(ids, t.off, order, t.conversation, t.time_s.astype(np.float64), t.block_tokens, local, warm,
                       width)
    sim = np.minimum(hit * t.block_tokens, t.input_tokens)
    conv = np.repeat(t.conversation[order].astype(np.int32), hit[order]) if tags else None  # in processing order
    if t.cache_read is not None:  # a usage log: its own split
        return Decomposition(t.cache_read, t.cache_write, t.uncached, t.output_tokens, sim, reuse, conv, True)
    return Decomposition(sim, t.input_tokens - sim, np.zeros(len(t), np.int64), t.output_tokens, sim, reuse, conv,
                         False)


def _ratio(a: float, b: float) -> float:
    return a / b if b else (math.inf if a else math.nan)


def figures(t: RequestTable, d: Decomposition, rows: np.ndarray) -> dict:
    """The decomposition's figures over ``rows`` (the keys of ``bench workload --json``)."""
    inp = int(t.input_tokens[rows].sum())
    read = int(d.read[rows].sum())
    writes = d.write[rows]
    write = int(writes[writes >= 0].sum()) if (writes >= 0).any() else None
    out = int(d.output[rows].sum())
    return {"requests": int(len(rows)), "input_tokens": inp, "output_tokens": out, "cache_read_tokens": read,
            "cache_write_tokens": write, "uncached_tokens": int(d.uncached[rows].sum()),
            "hit_rate": _ratio(read, inp), "read_write_ratio": _ratio(read, write) if write is not None else None,
            "input_output_ratio": _ratio(inp, out)}


def quantiles(x: np.ndarray, qs=(50, 90, 99), scratch: bool = False) -> dict:
    """{p50: ..} of ``x``'s finite values (None without any); ``scratch``: ``x`` may be reordered in place."""
    if not (x.dtype.kind == "i" or np.isfinite(x).all()):
        x, scratch = x[np.isfinite(x)], True
    if not x.size:
        return {f"p{q}": None for q in qs}
    return {f"p{q}": float(v) for q, v in zip(qs, np.percentile(x, qs, overwrite_input=scratch))}


def threads(t: RequestTable) -> np.ndarray:
    """Each request's (conversation, agent) thread as one int64 key."""
    return t.conversation.astype(np.int64) * (len(t.agent_names) + 2) + (t.agent + 1)


def per_turn(t: RequestTable) -> dict:
    """Context growth per turn (input over the thread's previous request), think time (logged, else the gap after
    the previous response) and the sub-agents' share of requests and input."""
    key = threads(t)
    order = np.lexsort((t.time_s, key))
    same = np.concatenate([[False], key[order][1:] == key[order][:-1]])
    inp, ts = t.input_tokens[order].astype(float), t.time_s[order]
    growth = (inp[1:] - inp[:-1])[same[1:]]
    if t.think_s is not None and np.isfinite(t.think_s).any():
        think, how = t.think_s[np.isfinite(t.think_s)], "logged (think_time)"
    else:
        gap = ts[1:] - ts[:-1]
        if t.api_s is not None:
            gap = gap - np.nan_to_num(t.api_s[order][:-1])
        think, how = gap[same[1:]], "the gap between requests of a thread" + ("" if t.api_s is None else
                                                                             ", less the previous API time")
    sub = t.agent >= 0
    return {"context_growth_tokens": {"mean": float(growth.mean()) if growth.size else None, **quantiles(growth)},
            "think_s": {"mean": float(np.nanmean(think)) if np.isfinite(think).any() else None, **quantiles(think),
                        "from": how},
            "subagents": {"agents": len(t.agent_names), "requests_share": float(sub.mean()),
                          "input_share": float(t.input_tokens[sub].sum() / max(1, t.input_tokens.sum()))}}


def group_quantiles(values: np.ndarray, groups: np.ndarray, n_groups: int, qs=(50, 90, 99)) -> np.ndarray:
    """[n_groups, len(qs)] percentiles of ``values`` within each group (numpy's linear interpolation, as
    :func:`quantiles`), non-finite values left out; nan for a group without values. One sort for every group."""
    ok = np.isfinite(values)
    v, g = values[ok].astype(np.float64), groups[ok].astype(np.int64)
    order = np.lexsort((v, g))
    v, g = v[order], g[order]
    start = np.searchsorted(g, np.arange(n_groups))
    count = np.searchsorted(g, np.arange(n_groups), side="right") - start
    out = np.full((n_groups, len(qs)), np.nan)
    has = count > 0
    for k, q in enumerate(qs):
        pos = (count[has] - 1) * (q / 100.0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, count[has] - 1)
        frac = pos - lo
        a, b = v[start[has] + lo], v[start[has] + hi]
        out[has, k] = a + (b - a) * frac
    return out


def per_conversation(t: RequestTable, d: Decomposition, reuse: bool = True) -> dict:
    """Each conversation's figures as arrays (index: conversation): requests and token sums (write -1 where no
    request of it tells), and (``reuse``) its reuse times' p50/p90/p99 (seconds)."""
    n = len(t.names)
    conv = t.conversation
    keep = conv >= 0
    c = conv[keep]
    total = lambda x: np.bincount(c, weights=x[keep].astype(np.float64), minlength=n)  # noqa: E731
    writes = d.write[keep]
    told = np.bincount(c, weights=(writes >= 0).astype(np.float64), minlength=n)
    write = np.where(told > 0, np.bincount(c, weights=np.maximum(writes, 0).astype(np.float64), minlength=n), -1)
    return {"requests": np.bincount(c, minlength=n), "input": total(t.input_tokens), "read": total(d.read),
            "write": write, "output": total(d.output), "uncached": total(d.uncached),
            "reuse": group_quantiles(d.reuse_s, d.reuse_conversation, n) if reuse else None}


def _session(pc: dict, c: int) -> dict:
    """One conversation's figures (the keys of :func:`figures`) from :func:`per_conversation`'s arrays."""
    inp, read, out, write = (int(pc[k][c]) for k in ("input", "read", "output", "write"))
    nan_none = lambda x: None if math.isnan(x) else float(x)  # noqa: E731
    return {"requests": int(pc["requests"][c]), "input_tokens": inp, "output_tokens": out, "cache_read_tokens": read,
            "cache_write_tokens": write if write >= 0 else None, "uncached_tokens": int(pc["uncached"][c]),
            "hit_rate": _ratio(read, inp), "read_write_ratio": _ratio(read, write) if write >= 0 else None,
            "input_output_ratio": _ratio(inp, out),
            "reuse_s": {f"p{q}": nan_none(x) for q, x in zip((50, 90, 99), pc["reuse"][c])}}


def summarize(t: RequestTable, shared_prefix: str = "cold", sessions: bool = True) -> dict:
    """Everything ``bench workload`` prints and writes: the total, each conversation (``sessions``: their figures
    one by one, else only their hit rates), the spread, reuse times, turns, and the seed's figures beside them."""
    d = decompose(t, shared_prefix, tags=sessions)
    total = figures(t, d, np.arange(len(t)))
    finite = d.reuse_s[np.isfinite(d.reuse_s)]  # (a warm shared prefix's hits have no reuse time): our own copy
    total["reuse_s"] = quantiles(finite, scratch=True)
    pc = per_conversation(t, d, reuse=sessions)
    present = np.flatnonzero(pc["requests"] > 0)
    rates_all = np.divide(pc["read"], pc["input"], out=np.full(len(pc["read"]), np.nan), where=pc["input"] > 0)
    rates = rates_all[present]
    sessions = {t.names[c]: _session(pc, c) for c in present} if sessions else {}
    spread = {k: float(v) for k, v in zip(("min", "p25", "median", "p75", "max"),
                                          np.percentile(rates, [0, 25, 50, 75, 100]))} if rates.size else {}
    big = int(np.bincount(t.conversation[t.conversation >= 0]).argmax()) if (t.conversation >= 0).any() else -1
    rows = np.flatnonzero(t.conversation == big)[:400] if big >= 0 else np.arange(min(len(t), 400))
    rows = rows[np.argsort(t.time_s[rows], kind="stable")]
    example = {"name": t.names[big] if big >= 0 else "(all requests)", "read": d.read[rows].tolist(),
               "write": np.maximum(d.write[rows], 0).tolist(), "uncached": d.uncached[rows].tolist(),
               "output": d.output[rows].tolist(), "subagent": (t.agent[rows] >= 0).tolist()}
    shares = np.linspace(0.01, 0.99, 99)
    cdf = {"share": shares.tolist(), "seconds": np.quantile(finite, shares, overwrite_input=True).tolist() if finite.size else []}
    return {"format": t.source, "block_tokens": t.block_tokens, "scope": t.scope, "shared_prefix": shared_prefix,
            "implied_blocks": t.implied, "notes": list(t.notes), "conversations": int(present.size),
            "total": total, "simulated_hit_rate": _ratio(int(d.simulated_hit_tokens.sum()),
                                                        int(t.input_tokens.sum())) if d.logged else None,
            "hit_rate_across_sessions": spread, **per_turn(t), "seed": SEED, "example_session": example,
            "reuse_cdf": cdf, "session_hit_rates": rates.tolist(), "sessions": sessions}


# -- the fleet those sessions make ---------------------------------------------------------------------------------
@njit(cache=True)
def _live_bytes(blocks, off, ts, n_unique):
    """(first use, last use) time of every block: it must be kept between them to serve every hit."""
    first = np.full(n_unique, np.inf)
    last = np.full(n_unique, -np.inf)
    for i in range(len(ts)):
        for j in range(off[i], off[i + 1]):
            b = blocks[j]
            if ts[i] < first[b]:
                first[b] = ts[i]
            if ts[i] > last[b]:
                last[b] = ts[i]
    return first, last


def working_set(trace, block_bytes: int, points: int = 200) -> dict:
    """The KV working set over time: bytes of the blocks used before and again after each moment (what a cache
    must hold to serve every hit), sampled at ``points`` times; its peak."""
    first, last = _live_bytes(trace.blocks, trace.off, trace.timestamp_ms / 1e3, int(trace.n_unique))
    reused = last > first
    ev_t = np.concatenate([first[reused], last[reused]])
    ev = np.concatenate([np.ones(int(reused.sum())), -np.ones(int(reused.sum()))])
    order = np.argsort(ev_t, kind="stable")
    live = np.cumsum(ev[order]) * block_bytes
    if not live.size:
        return {"minutes": [], "bytes": [], "peak_bytes": 0.0}
    grid = np.linspace(ev_t.min(), ev_t.max(), points)
    at = np.searchsorted(ev_t[order], grid, side="right") - 1
    vals = np.where(at >= 0, live[np.maximum(at, 0)], 0.0)
    return {"minutes": ((grid - grid[0]) / 60).tolist(), "bytes": vals.tolist(), "peak_bytes": float(live.max())}


def capacity_for(cv, shares, unlimited: float, hi: int) -> list[int]:
    """Fewest cache blocks per instance (one LRU: HBM, host and NVMe are one stack) that keep each of ``shares`` of
    an unlimited cache's hit tokens (``unlimited``): a geometric grid of capacities in one pass, then each answer
    refined between its two grid points in a second pass (within 1/64 of the gap, rounded up)."""
    grid = np.unique(np.geomspace(1, max(hi, 2), 256).astype(np.int64))
    hits = cv.hit_tokens(grid)
    out = []
    for share in shares:
        i = int(np.searchsorted(hits, share * unlimited, side="left"))
        if i >= len(grid):
            out.append(int(hi))
            continue
        lo = int(grid[i - 1]) if i else 0
        fine = np.unique(np.linspace(lo, int(grid[i]), 66).astype(np.int64))
        f_hits = cv.hit_tokens(fine)
        out.append(int(fine[int(np.searchsorted(f_hits, share * unlimited, side="left"))]))
    return out


def fleet_figures(t: RequestTable, kv_bytes_per_token: int, fl, users: int, hbm_bytes: float,
                  weight_bytes: int) -> dict:
    """The fleet ``users`` concurrent sessions make: per-tier hit rates at the fleet's capacities, how much cache per
    GPU keeps 50/90/99% of the unlimited cache's hits (split into HBM, host DRAM and NVMe as the fleet holds them),
    the capacity curve (one pass) and the KV working set over time. Bytes per GPU; ``fl``: the fleet config."""
    from bench.model.cachesim import Curves, simulate
    from bench.model.traces.table import to_trace

    trace = to_trace(t, users)
    ts = trace.timestamp_ms / 1e3
    bt, inst = t.block_tokens, int(fl.sim_instances)
    block_bytes = bt * kv_bytes_per_token
    g = fl.gpus_per_instance or next(k for k in (1, 2, 4, 8, 16, 32, 64) if weight_bytes <= 0.6 * k * hbm_bytes)
    hbm_kv = max(g * hbm_bytes * (1 - fl.reserve_fraction) - weight_bytes, 0) * fl.hbm_cache_fraction
    caps = (max(1, int(hbm_kv // block_bytes)), int(g * fl.host_bytes_per_gpu // block_bytes),
            int(g * fl.storage_bytes_per_gpu // block_bytes))
    routing = "session" if (trace.session >= 0).all() else "prefix"
    at_caps = simulate(trace, bt, caps, inst, routing)
    unlimited = simulate(trace, bt, (trace.n_unique + 1, 0, 0), inst, routing)
    u_hits = float(unlimited.hit_tokens.sum())
    cv = Curves(trace, bt, at_caps.instance, inst, routing)
    keep = {}
    shares = (0.5, 0.9, 0.99)
    for share, blocks in zip(shares, capacity_for(cv, shares, u_hits, int(trace.n_unique) + 1)):
        per_gpu = blocks * block_bytes / g
        hbm = min(per_gpu, hbm_kv / g)
        host = min(per_gpu - hbm, fl.host_bytes_per_gpu)
        keep[f"{share:.0%}"] = {"bytes_per_gpu": per_gpu, "hbm_bytes": hbm, "host_bytes": host,
                                "nvme_bytes": per_gpu - hbm - host}
    grid = np.unique(np.geomspace(1, trace.n_unique + 1, 32).astype(np.int64))
    total = float(trace.input_length.sum())
    curve = [{"bytes_per_gpu": int(c) * block_bytes / g, "hit_rate": float(h) / total}
             for c, h in zip(grid, cv.hit_tokens(grid))]
    return {"users": users, "routing": routing, "instances": inst, "gpus_per_instance": g,
            "kv_bytes_per_token": kv_bytes_per_token, "block_bytes": block_bytes,
            "capacities_blocks": list(caps), "hbm_kv_bytes_per_gpu": hbm_kv / g, "hbm_bytes_per_gpu": hbm_bytes,
            "tiers": at_caps.rates(), "unlimited_hit_rate": unlimited.rates()["hit_rate"], "keep_hits": keep,
            "curve": curve, "working_set": working_set(trace, block_bytes),
            "span_minutes": float((ts.max() - ts.min()) / 60) if len(ts) else 0.0}
