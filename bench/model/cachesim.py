"""Tiered KV-cache simulator: HBM -> host DRAM -> storage, exclusive, LRU, over block hash ids.

Hit semantics (what a request gets from the cache):
- A request hits the longest prefix of its input blocks present in any tier: block hashes chain the prefix, so a
  block after a missing one cannot be used. Each position of the request counts, also a block id that appears
  twice (both positions hit while it is cached); hit tokens stop at the request's input length (the last,
  partial block counts only its real tokens, in the tier of that block).
- Then every block of the request, input and the blocks its answer completes, becomes resident in HBM (hits
  from host or storage are loaded up, misses are computed), aged tail first as vLLM frees a finished sequence: the
  last block of the sequence is the least recently used of them, its first the most recent (so a shared prefix
  outlives the tails that extend it). A block listed twice takes the recency of its earliest position.
- Overflow demotes the least recently used blocks one tier down (exclusive tiers: a block lives in one); storage
  overflow drops them. Every block in a lower tier was used less recently than every block above it, so the
  three tiers are one LRU stack cut at C1, C1+C2, C1+C2+C3: a block's tier is a function of its stack distance
  (distinct blocks used since), and one pass of stack distances gives the hit rates of every capacity mix.
- Routing over instances: round_robin (request i -> i mod n), session (session id mod n; requests without session
  ids fall back to prefix), prefix (longest cached prefix among instances at most 10% above the mean load; ties to
  the least loaded), as SGLang's and Mooncake's cache-aware routers with a load cap.
- Requests are replayed in timestamp order.

Speed: numba kernels. The fixed-capacity replay keeps per instance one doubly linked LRU list of blocks with a
boundary pointer at the end of each tier (a demotion relabels the block at a boundary, O(1)); the all-capacity
pass counts stack distances with a Fenwick tree over access stamps (O(log n) per access). Sampled mode replays a
hash-chosen fraction of the instances with their whole load (see Curves).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from numba import njit

TIERS = ("hbm", "host", "storage")
ROUTINGS = ("round_robin", "session", "prefix")
ROUTING_CODES = {"round_robin": 0, "session": 1, "prefix": 2}
INF = np.iinfo(np.int64).max
DIST_INF = np.iinfo(np.int32).max  # a stack distance of a block never seen (distances are int32: < blocks seen)


@dataclass
class Trace:
    """Requests with dense block ids, in timestamp order: ``blocks[off[i]:off[i+1]]`` are request i's input
    blocks, ``out_blocks[ooff[i]:ooff[i+1]]`` the blocks its answer completes."""

    blocks: np.ndarray
    off: np.ndarray
    out_blocks: np.ndarray
    ooff: np.ndarray
    input_length: np.ndarray
    output_length: np.ndarray
    session: np.ndarray
    n_unique: int
    timestamp_ms: Optional[np.ndarray] = None

    @classmethod
    def from_arrays(cls, blocks, lengths, out_blocks, out_lengths, input_length, output_length, session,
                    timestamp_ms=None) -> "Trace":
        """From flat id arrays and per-request counts (any integer ids: made dense here by hashing, O(n)); sorted
        by timestamp (stable) when timestamps are given."""
        import pandas as pd

        blocks, out_blocks = np.asarray(blocks, np.int64), np.asarray(out_blocks, np.int64)
        lengths, out_lengths = np.asarray(lengths, np.int64), np.asarray(out_lengths, np.int64)
        codes, uniq = pd.factorize(np.concatenate([blocks, out_blocks]))
        dense_in, dense_out = codes[:len(blocks)].astype(np.int64), codes[len(blocks):].astype(np.int64)
        off = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=off[1:])
        ooff = np.zeros(len(out_lengths) + 1, np.int64)
        np.cumsum(out_lengths, out=ooff[1:])
        il, ol = np.asarray(input_length, np.int64), np.asarray(output_length, np.int64)
        sess = np.asarray(session, np.int64)
        ts = None if timestamp_ms is None else np.asarray(timestamp_ms, np.float64)
        if ts is not None and len(ts) > 1 and np.any(np.diff(ts) < 0):
            order = np.argsort(ts, kind="stable")
            dense_in, off = _regroup(dense_in, off, order)
            dense_out, ooff = _regroup(dense_out, ooff, order)
            il, ol, sess, ts = il[order], ol[order], sess[order], ts[order]
        return cls(dense_in, off, dense_out, ooff, il, ol, sess, len(uniq), ts)

    @classmethod
    def from_requests(cls, reqs) -> "Trace":
        ins = [r.hash_ids for r in reqs]
        outs = [r.output_hash_ids or [] for r in reqs]
        from itertools import chain

        return cls.from_arrays(
            np.fromiter(chain.from_iterable(ins), np.int64), np.fromiter(map(len, ins), np.int64, len(reqs)),
            np.fromiter(chain.from_iterable(outs), np.int64), np.fromiter(map(len, outs), np.int64, len(reqs)),
            np.fromiter((r.input_length for r in reqs), np.int64, len(reqs)),
            np.fromiter((r.output_length for r in reqs), np.int64, len(reqs)),
            np.fromiter((-1 if r.session_id is None else int(r.session_id) for r in reqs), np.int64, len(reqs)),
            np.fromiter((r.timestamp_ms for r in reqs), np.float64, len(reqs)))

    def __len__(self) -> int:
        return len(self.input_length)

    @property
    def accesses(self) -> int:
        """Block accesses of a replay: every input block looked up and every input and output block touched."""
        return int(2 * self.off[-1] + self.ooff[-1])

    def take(self, keep: np.ndarray) -> "Trace":
        """The requests ``keep`` (indices, in order), block ids as they are."""
        blocks, off = _regroup(self.blocks, self.off, keep)
        out_blocks, ooff = _regroup(self.out_blocks, self.ooff, keep)
        return Trace(blocks, off, out_blocks, ooff, self.input_length[keep], self.output_length[keep],
                     self.session[keep], self.n_unique,
                     None if self.timestamp_ms is None else self.timestamp_ms[keep])


def _regroup(flat: np.ndarray, off: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The groups ``order`` of a flat array with offsets ``off``, concatenated in that order (a run of consecutive
    groups is one slice)."""
    order = np.asarray(order, np.int64)
    if len(order) and order[0] >= 0 and np.array_equal(order, np.arange(order[0], order[0] + len(order))):
        a, b = off[order[0]], off[order[0] + len(order)]
        return flat[a:b].copy(), off[order[0]:order[0] + len(order) + 1] - a
    lens = (off[1:] - off[:-1])[order]
    new_off = np.zeros(len(order) + 1, np.int64)
    np.cumsum(lens, out=new_off[1:])
    return _gather_groups(flat, off, order, new_off), new_off


@njit(cache=True)
def _gather_groups(flat, off, order, new_off):
    out = np.empty(new_off[-1], flat.dtype)
    for k in range(len(order)):
        s = off[order[k]]
        o = new_off[k]
        for j in range(new_off[k + 1] - o):
            out[o + j] = flat[s + j]
    return out


@dataclass
class SimResult:
    """Per-request hit tokens by tier and miss tokens, plus the instance each request went to."""

    hit_tokens: np.ndarray  # [n_requests, 3] hbm, host, storage
    miss_tokens: np.ndarray
    instance: np.ndarray
    routing: str
    meta: dict = field(default_factory=dict)

    def rates(self) -> dict:
        total = self.hit_tokens.sum() + self.miss_tokens.sum()
        out = {f"hit_rate_{t}": float(self.hit_tokens[:, i].sum() / total) for i, t in enumerate(TIERS)}
        out["hit_rate"] = float(self.hit_tokens.sum() / total)
        return out


# -- the fixed-capacity replay ---------------------------------------------------------------------------------------
# (one kernel, no helper calls: numba passes arrays to a non-inlined call by value-structs, 14x slower here)
@njit(cache=True, nogil=True)
def _replay(requests, n_unique, cap, instances, mode, block_tokens):
    """``requests``: (blocks, off, out_blocks, ooff, input_length, session) of a Trace."""
    blocks, off, out_blocks, ooff, input_length, session = requests
    n = len(input_length)
    prev = np.full((instances, n_unique), -1, np.int32)
    nxt = np.full((instances, n_unique), -1, np.int32)
    tier = np.zeros((instances, n_unique), np.int8)
    head = np.full(instances, -1, np.int64)
    last = np.full((instances, 4), -1, np.int64)  # the last (least recent) block of each tier's segment
    count = np.zeros((instances, 4), np.int64)
    hits = np.zeros((n, 3), np.int64)
    miss = np.zeros(n, np.int64)
    inst = np.zeros(n, np.int64)
    load = np.zeros(instances, np.float64)
    for i in range(n):
        s, e = off[i], off[i + 1]
        if mode == 0 or instances == 1:
            k = i % instances
        elif mode == 1:
            k = session[i] % instances
        else:  # longest cached prefix among instances not overloaded; ties to the least loaded
            limit = load.sum() / instances * 1.1 + input_length[i]
            k, best_len, best_load = -1, -1, 0.0
            for c in range(instances):
                if load[c] > limit:
                    continue
                pl = 0
                for j in range(s, e):
                    if tier[c, blocks[j]] == 0:
                        break
                    pl += 1
                if pl > best_len or (pl == best_len and load[c] < best_load):
                    k, best_len, best_load = c, pl, load[c]
        tot = 0
        lt = 0
        for j in range(s, e):  # the cached prefix, by tier
            t = tier[k, blocks[j]]
            if t == 0:
                break
            hits[i, t - 1] += block_tokens
            tot += block_tokens
            lt = t
        inp = input_length[i]
        if tot > inp:  # the last (partial) block of the input: only its real tokens
            hits[i, lt - 1] -= tot - inp
            tot = inp
        miss[i] = inp - tot
        inst[i] = k
        load[k] += inp
        # the finished sequence (input, then the blocks the answer completes) is freed tail first: touch it from
        # its last block to its first, each becoming the most recent block of HBM
        m_out = ooff[i + 1] - ooff[i]
        for r in range(m_out + (e - s)):
            b = out_blocks[ooff[i + 1] - 1 - r] if r < m_out else blocks[e - 1 - (r - m_out)]
            t = tier[k, b]
            if t > 0:  # unlink b
                p, q = prev[k, b], nxt[k, b]
                if last[k, t] == b:
                    last[k, t] = p if (p >= 0 and tier[k, p] == t) else -1
                if p >= 0:
                    nxt[k, p] = q
                else:
                    head[k] = q
                if q >= 0:
                    prev[k, q] = p
                count[k, t] -= 1
            h = head[k]
            prev[k, b] = -1
            nxt[k, b] = h
            if h >= 0:
                prev[k, h] = b
            head[k] = b
            tier[k, b] = 1
            count[k, 1] += 1
            if last[k, 1] < 0:
                last[k, 1] = b
            for t in range(1, 4):  # overflow: the least recent block of tier t moves to the next tier that exists
                while count[k, t] > cap[t]:
                    x = last[k, t]
                    lower = t + 1
                    while lower <= 3 and cap[lower] == 0:
                        lower += 1
                    p = prev[k, x]
                    last[k, t] = p if (p >= 0 and tier[k, p] == t) else -1
                    count[k, t] -= 1
                    if lower > 3:  # dropped: x is the tail of the whole list
                        if p >= 0:
                            nxt[k, p] = -1
                        else:
                            head[k] = -1
                        prev[k, x] = -1
                        nxt[k, x] = -1
                        tier[k, x] = 0
                    else:
                        tier[k, x] = lower
                        count[k, lower] += 1
                        if last[k, lower] < 0:
                            last[k, lower] = x
    return hits, miss, inst


def simulate(trace: Trace, block_tokens: int, capacities: tuple[int, int, int], instances: int = 1,
             routing: str = "round_robin") -> SimResult:
    """Replay ``trace`` over ``instances`` caches of ``capacities`` blocks each (HBM, host, storage; 0 = absent)."""
    if routing not in ROUTINGS:
        raise ValueError(routing)
    has_session = bool((trace.session >= 0).all())
    mode = routing if routing != "session" or has_session else "prefix"
    cap = np.array([0, *[int(c) for c in capacities]], np.int64)
    requests = (trace.blocks, trace.off, trace.out_blocks, trace.ooff, trace.input_length, trace.session)
    hits, miss, inst = _replay(requests, int(trace.n_unique), cap, int(instances), ROUTING_CODES[mode],
                               int(block_tokens))
    return SimResult(hits, miss, inst, routing, {"effective_routing": mode, "instances": instances,
                                                  "capacities_blocks": list(capacities)})


# -- every capacity at once: stack distances --------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _fen_range(tree, b0, size, lo, hi, cw, sign):
    """Add ``sign`` x w[q] at every stamp q in lo..hi (0-based) in O(hi - lo + log n): each node inside the range
    takes the part of the range it covers (``cw``: cumulative weights, cw[x] = w[lo] + ... + w[lo + x - 1]); the
    nodes above it covering the range are exactly the update path of hi."""
    l1, r1 = lo + 1, hi + 1  # 1-based
    for i in range(l1, r1 + 1):
        a = max(l1 - 1, i - (i & (-i)))
        tree[b0 + i - 1] += sign * (cw[i - lo - 1 + 1] - cw[a - lo])
    i = r1 + (r1 & (-r1))
    while i <= size:
        a = max(l1 - 1, i - (i & (-i)))
        if a < r1:
            tree[b0 + i - 1] += sign * (cw[r1 - lo] - cw[max(a, l1 - 1) - lo])
        i += i & (-i)


@njit(cache=True, nogil=True)
def _distances(blocks, off, out_blocks, ooff, inst, instances, n_unique):
    """Stack distance (distinct blocks used since, 0 = most recent; DIST_INF = never seen in that instance) of every
    input block at its lookup: a Fenwick tree per instance over its touch stamps holds a 1 at each block's last
    stamp; the distance of a block last touched at stamp p is the number of ones after p.

    A request's blocks were mostly touched together before (consecutive stamps, tail first) and are touched
    together again (new consecutive stamps): runs of consecutive stamps are queried once and stepped through the
    live bits, and removed and added as ranges (O(run + log n) instead of O(run x log n))."""
    n = len(off) - 1
    touches = np.zeros(instances, np.int64)
    for i in range(n):
        touches[inst[i]] += (off[i + 1] - off[i]) + (ooff[i + 1] - ooff[i])
    base = np.zeros(instances + 1, np.int64)
    for k in range(instances):
        base[k + 1] = base[k] + touches[k]
    tree = np.zeros(base[instances] + 1, np.int32)
    alive = np.zeros(base[instances] + 1, np.int8)  # 1 at a stamp that is still its block's last touch
    stamp = np.zeros(instances, np.int64)
    live = np.zeros(instances, np.int64)
    lastpos = np.full((instances, n_unique), -1, np.int32)  # stamps < touches of one instance (< 2**31)
    dist = np.empty(len(blocks), np.int32)
    maxm = 1
    for i in range(n):
        maxm = max(maxm, (off[i + 1] - off[i]) + (ooff[i + 1] - ooff[i]))
    cw = np.zeros(maxm + 1, np.int64)
    olds = np.empty(maxm, np.int64)
    for i in range(n):
        k = inst[i]
        b0, size = base[k], touches[k]
        prev_p, prev_acc = -2, 0
        for j in range(off[i + 1] - 1, off[i] - 1, -1):  # last position first: its stamp is the oldest
            p = lastpos[k, blocks[j]]
            if p < 0:
                dist[j] = DIST_INF
                continue
            if p == prev_p + 1:
                acc = prev_acc + alive[b0 + p]
            elif p == prev_p:
                acc = prev_acc
            else:  # Fenwick prefix sum over stamps 0..p (inline: a call per lookup costs numba ~10x)
                acc = 0
                x = p + 1
                while x > 0:
                    acc += tree[b0 + x - 1]
                    x -= x & (-x)
            dist[j] = live[k] - acc
            prev_p, prev_acc = p, acc
        # touches, tail first: old stamps removed (in runs of consecutive stamps), new stamps t0.. added as a range
        m_out = ooff[i + 1] - ooff[i]
        m = m_out + (off[i + 1] - off[i])
        t0 = stamp[k]
        nold = 0
        for r in range(m):
            b = out_blocks[ooff[i + 1] - 1 - r] if r < m_out else blocks[off[i + 1] - 1 - (r - m_out)]
            p = lastpos[k, b]
            if p >= t0:  # touched earlier in this request: its new stamp is not live any more
                alive[b0 + p] = 0
            elif p >= 0:
                olds[nold] = p
                nold += 1
            else:
                live[k] += 1
            lastpos[k, b] = t0 + r
            alive[b0 + t0 + r] = 1
        stamp[k] = t0 + m
        x = 0
        while x < nold:  # remove the old stamps: consecutive runs as ranges
            y = x
            while y + 1 < nold and olds[y + 1] == olds[y] + 1:
                y += 1
            lo, hi = olds[x], olds[y]
            if y - x < 4:
                for q in range(x, y + 1):
                    alive[b0 + olds[q]] = 0
                    z = olds[q] + 1
                    while z <= size:
                        tree[b0 + z - 1] -= 1
                        z += z & (-z)
            else:
                for q in range(hi - lo + 2):
                    cw[q] = q
                for q in range(lo, hi + 1):
                    alive[b0 + q] = 0
                _fen_range(tree, b0, size, lo, hi, cw, 1 * -1)
            x = y + 1
        cw[0] = 0
        for q in range(m):  # the new stamps (a duplicate's earlier stamp is not alive: weight 0)
            cw[q + 1] = cw[q] + alive[b0 + t0 + q]
        if m:
            _fen_range(tree, b0, size, t0, t0 + m - 1, cw, 1)
    return dist


@njit(cache=True)
def _reuse_ages(blocks, off, out_blocks, ooff, inst, instances, n_unique, ts):
    """Minutes since each input block was last used in its instance, for the blocks that are prefix hits with an
    unbounded cache (the reuses the workload has), in request order: one float32 per hit, nothing for the others."""
    n = len(off) - 1
    lastts = np.full((instances, n_unique), -1.0, np.float64)
    age = np.empty(len(blocks), np.float32)
    nr = 0
    for i in range(n):
        k = inst[i]
        for j in range(off[i], off[i + 1]):
            a = lastts[k, blocks[j]]
            if a < 0:
                break
            age[nr] = (ts[i] - a) / 60e3
            nr += 1
        for j in range(ooff[i], ooff[i + 1]):
            lastts[k, out_blocks[j]] = ts[i]
        for j in range(off[i], off[i + 1]):
            lastts[k, blocks[j]] = ts[i]
    return age[:nr]


@njit(cache=True, nogil=True)
def _classify(dist, off, input_length, block_tokens, c1, c2, c3):
    """Per-request hit tokens by tier and miss tokens for capacities (c1, c2, c3) from stack distances."""
    n = len(off) - 1
    hits = np.zeros((n, 3), np.int64)
    miss = np.zeros(n, np.int64)
    e1, e2, e3 = c1, c1 + c2, c1 + c2 + c3
    for i in range(n):
        tot = 0
        last_t = -1
        for j in range(off[i], off[i + 1]):
            d = dist[j]
            if d >= e3:
                break
            t = 0 if d < e1 else (1 if d < e2 else 2)
            hits[i, t] += block_tokens
            tot += block_tokens
            last_t = t
        inp = input_length[i]
        if tot > inp:
            hits[i, last_t] -= tot - inp
            tot = inp
        miss[i] = inp - tot
    return hits, miss


@njit(cache=True)
def _hits_at_capacities(dist, off, input_length, block_tokens, caps):
    """Hit tokens of one cache (all tiers one LRU) at each capacity of ``caps`` (ascending blocks), in one pass: a
    request's position j hits at capacity C while the largest stack distance of positions 0..j is below C (a
    prefix stops at its first miss); each position weighs its tokens (the last, partial block its real ones)."""
    k = len(caps)
    counts = np.zeros(k + 1, np.int64)
    for i in range(len(off) - 1):
        m = -1
        inp = input_length[i]
        for j in range(off[i], off[i + 1]):
            d = dist[j]
            if d > m:
                m = d
            if m >= caps[k - 1]:
                break
            lo, hi = 0, k  # the number of capacities <= m
            while lo < hi:
                mid = (lo + hi) // 2
                if caps[mid] <= m:
                    lo = mid + 1
                else:
                    hi = mid
            w = min(block_tokens, inp - (j - off[i]) * block_tokens)
            if w <= 0:
                break
            counts[lo] += w
    return np.cumsum(counts)[:k]


class Curves:
    """Stack distances of one replay (an assignment of requests to instances): ``at(capacities)`` gives the
    SimResult of any capacity mix without replaying (exact for LRU: the tiers are one stack).

    ``rate`` < 1 samples instances, not blocks: a hash-chosen ``rate`` of the instances is replayed exactly with
    every request routed to it (an instance keeps its whole load, so the concurrency that decides an LRU's hits is
    the full system's; SHARDS-style spatial sampling with the routing key as the unit). The full fleet's rates are
    the kept instances' (exact for round-robin and session routing, whose assignment does not depend on what is
    cached); ``stderr`` is the standard error of that mean from the kept instances' spread. Sampling blocks or
    sessions instead thins the concurrency on an instance and biased agentic hit rates by 2-5 points at the knee
    of the curve (measured); instances do not."""

    def __init__(self, trace: Trace, block_tokens: int, instance: np.ndarray, instances: int, routing: str,
                 rate: float = 1.0, seed: int = 0):
        self.bt, self.instances, self.routing = int(block_tokens), int(instances), routing
        instance = np.asarray(instance, np.int64)
        self.rate = float(rate)
        if self.rate < 1.0 and instances > 1:
            m = max(2 if instances >= 4 else 1, int(round(self.rate * instances)))
            order = np.argsort((np.arange(instances, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) +
                                np.uint64(seed)) >> np.uint64(33), kind="stable")
            self.kept_instances = np.sort(order[:m])
            keep = np.flatnonzero(np.isin(instance, self.kept_instances))
            trace = trace.take(keep)
            instance = instance[keep]
        else:
            self.kept_instances = np.arange(instances)
        self.trace, self.instance = trace, instance
        self.dist = _distances(trace.blocks, trace.off, trace.out_blocks, trace.ooff, self.instance,
                               self.instances, int(trace.n_unique))

    @property
    def sampled(self) -> bool:
        return len(self.kept_instances) < self.instances

    def hit_tokens(self, capacities) -> np.ndarray:
        """Hit tokens of the whole replay with one cache of each capacity (blocks per instance; HBM, host and NVMe
        are one stack, so this is every tier mix of that total), all in one pass."""
        caps = np.minimum(np.asarray(capacities, np.int64), DIST_INF)  # DIST_INF (never seen) stays a miss
        order = np.argsort(caps, kind="stable")
        out = np.empty(len(caps), np.int64)
        out[order] = _hits_at_capacities(self.dist, self.trace.off, self.trace.input_length, self.bt, caps[order])
        return out

    def at(self, capacities: tuple[int, int, int]) -> SimResult:
        c1, c2, c3 = _below_inf(capacities)
        hits, miss = _classify(self.dist, self.trace.off, self.trace.input_length, self.bt, c1, c2, c3)
        return SimResult(hits, miss, self.instance, self.routing,
                         {"effective_routing": self.routing, "instances": self.instances,
                          "capacities_blocks": [c1, c2, c3], "instances_replayed": len(self.kept_instances)})

    def stderr(self, res: SimResult) -> dict:
        """Standard error (fraction) of each fleet-wide rate of a sampled ``at`` result: the spread of the kept
        instances' rates over sqrt(kept), finite-population corrected (0 when every instance was replayed)."""
        m, n = len(self.kept_instances), self.instances
        out = {}
        for key in ("hit_rate_hbm", "hit_rate_host", "hit_rate_storage", "hit_rate"):
            if m == n or m < 2:
                out[key] = 0.0 if m == n else float("nan")
                continue
            vals = []
            for k in self.kept_instances:
                sel = res.instance == k
                tot = res.hit_tokens[sel].sum() + res.miss_tokens[sel].sum()
                if tot == 0:
                    continue
                if key == "hit_rate":
                    vals.append(res.hit_tokens[sel].sum() / tot)
                else:
                    vals.append(res.hit_tokens[sel][:, TIERS.index(key.split("_")[-1])].sum() / tot)
            out[key] = float(np.std(vals, ddof=1) / np.sqrt(len(vals)) * np.sqrt(1 - m / n)) if len(vals) > 1 else \
                float("nan")
        return out


def _below_inf(capacities) -> tuple[int, int, int]:
    """Capacities (blocks) whose sums stay below DIST_INF, so a block never seen is never a hit."""
    c1, c2, c3 = (int(c) for c in capacities)
    c1 = min(c1, DIST_INF)
    c2 = min(c2, DIST_INF - c1)
    return c1, c2, min(c3, DIST_INF - c1 - c2)


def reuse_times(trace: Trace, instance, instances: int, shares=(0.5, 0.9, 0.99), points: int = 200) -> dict:
    """How long KV must persist: over the hits an unbounded cache would serve (prefix hits, each block position a
    hit), the time since that block was last used in its instance; quantiles at ``shares`` in minutes ("to keep 90%
    of the hits a block must stay N minutes") and the CDF. Needs trace timestamps (None without)."""
    if trace.timestamp_ms is None:
        return {"shares": list(shares), "minutes": [None] * len(shares), "hits": 0, "cdf": {"minutes": [], "share": []}}
    age = _reuse_ages(trace.blocks, trace.off, trace.out_blocks, trace.ooff, np.asarray(instance, np.int64),
                      int(instances), int(trace.n_unique), np.asarray(trace.timestamp_ms, np.float64))
    ages = age.copy()  # its own memory: the slice's unused rest goes back
    del age
    ages.sort()
    if ages.size == 0:
        return {"shares": list(shares), "minutes": [None] * len(shares), "hits": 0, "cdf": {"minutes": [], "share": []}}
    idx = np.unique(np.linspace(0, ages.size - 1, min(points, ages.size)).astype(int))
    return {"shares": list(shares), "minutes": [float(x) for x in np.quantile(ages, list(shares))],
            "hits": int(ages.size), "cdf": {"minutes": ages[idx].tolist(), "share": ((idx + 1) / ages.size).tolist()}}


def simulate_reference(requests, block_tokens: int, capacities: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force single-instance reference with OrderedDicts (exact LRU, same semantics), for tests: requests in
    the order given; each position of the input looked up; the finished sequence touched tail first."""
    from collections import OrderedDict

    tiers = [OrderedDict(), OrderedDict(), OrderedDict()]
    hits = np.zeros((len(requests), 3), dtype=np.int64)
    miss = np.zeros(len(requests), dtype=np.int64)

    def where(h):
        return next((j for j, od in enumerate(tiers) if h in od), None)

    def touch(ids):
        for h in ids:  # move to the front of HBM (most recent last in the OrderedDict)
            w = where(h)
            if w is not None:
                del tiers[w][h]
            tiers[0][h] = True
            for j in range(3):
                while len(tiers[j]) > capacities[j]:
                    victim, _ = tiers[j].popitem(last=False)
                    lower = next((k for k in range(j + 1, 3) if capacities[k] > 0), None)
                    if lower is not None:  # demoted: more recent than everything already below
                        tiers[lower][victim] = True

    for i, r in enumerate(requests):
        per, last_tier = [0, 0, 0], None
        for h in r.hash_ids:
            w = where(h)
            if w is None:
                break
            per[w] += block_tokens
            last_tier = w
        hit = min(sum(per), r.input_length)
        if hit < sum(per):
            per[last_tier] -= sum(per) - hit
        hits[i] = per
        miss[i] = r.input_length - hit
        seq = list(r.hash_ids) + list(r.output_hash_ids or [])
        touch(reversed(seq))
    return hits, miss

