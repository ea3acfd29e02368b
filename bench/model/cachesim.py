"""Tiered KV-cache simulator: HBM -> host DRAM -> storage, exclusive, LRU, over block hash ids.

A request hits the longest prefix of its blocks present in any tier (a later block cannot be used once one is
missing: block hashes chain the prefix). Every block of the request then sits in HBM as most recently used (hits
from host or storage are loaded up); blocks the answer completes are added too. Overflow demotes the least
recently used blocks one tier down; storage overflow drops them.

Speed: block ids are made dense once for the whole trace, each tier's LRU victims are found by a pointer
walking a global access log in stamp order (amortised O(1) per access, vectorised per request), so a million
requests take well under a minute on one core. With ``slack`` > 0 a tier that overflows is trimmed to
``(1 - slack) x capacity`` at once (fewer, larger evictions; slack=0 is exact LRU).
Invariant that makes one log serve all tiers: every block in a lower tier was used less recently than every
block above it, so each tier's pointer meets its own victims in stamp order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TIERS = ("hbm", "host", "storage")


@dataclass
class Trace:
    """Requests with dense block ids: ``blocks[off[i]:off[i+1]]`` are request i's input blocks,
    ``out_blocks[ooff[i]:ooff[i+1]]`` the blocks its answer completes."""

    blocks: np.ndarray
    off: np.ndarray
    out_blocks: np.ndarray
    ooff: np.ndarray
    input_length: np.ndarray
    output_length: np.ndarray
    session: np.ndarray
    n_unique: int

    @classmethod
    def from_requests(cls, reqs) -> "Trace":
        ins = [np.asarray(r.hash_ids, dtype=np.int64) for r in reqs]
        outs = [np.asarray(r.output_hash_ids or [], dtype=np.int64) for r in reqs]
        allids = np.concatenate(ins + outs) if ins else np.zeros(0, np.int64)
        uniq, dense = np.unique(allids, return_inverse=True)
        n_in = sum(len(a) for a in ins)
        off = np.zeros(len(reqs) + 1, np.int64)
        off[1:] = np.cumsum([len(a) for a in ins])
        ooff = np.zeros(len(reqs) + 1, np.int64)
        ooff[1:] = np.cumsum([len(a) for a in outs])
        sess = np.array([(-1 if r.session_id is None else int(r.session_id)) for r in reqs], dtype=np.int64)
        return cls(dense[:n_in].astype(np.int64), off, dense[n_in:].astype(np.int64), ooff,
                   np.array([r.input_length for r in reqs], np.int64),
                   np.array([r.output_length for r in reqs], np.int64), sess, len(uniq))

    def __len__(self) -> int:
        return len(self.input_length)


class TieredCache:
    """One instance's HBM, host and storage tiers; capacities in blocks (0 = tier absent)."""

    def __init__(self, n_unique: int, capacities: tuple[int, int, int], log_size: int, slack: float = 0.0):
        self.cap = np.array([0, *capacities], dtype=np.int64)  # index 0 = not cached
        self.tier = np.zeros(n_unique, dtype=np.int8)
        self.last = np.full(n_unique, -1, dtype=np.int64)
        self.count = np.zeros(4, dtype=np.int64)
        self.log = np.empty(max(log_size, 1), dtype=np.int64)  # block id at each stamp
        self.stamp = 0
        self.ptr = np.zeros(4, dtype=np.int64)
        self.slack = slack

    def lookup(self, b: np.ndarray) -> tuple[int, np.ndarray]:
        """(prefix length in blocks that hits, tier of each block) without changing state."""
        t = self.tier[b]
        miss = np.flatnonzero(t == 0)
        return (int(miss[0]) if miss.size else len(b)), t

    def touch(self, b: np.ndarray) -> None:
        """Make ``b`` the most recently used blocks, all in HBM, then evict down the hierarchy."""
        if b.size == 0:
            return
        t = self.tier[b]
        self.count -= np.bincount(t, minlength=4)
        self.count[0] = 0
        self.tier[b] = 1
        self.count[1] += b.size
        s0 = self.stamp
        self.last[b] = np.arange(s0, s0 + b.size)
        self.log[s0:s0 + b.size] = b
        self.stamp += b.size
        for level in (1, 2, 3):
            self._evict(level)

    def _below(self, level: int) -> int:
        """The next tier down that exists (capacity > 0), or 0 (dropped)."""
        for lower in range(level + 1, 4):
            if self.cap[lower] > 0:
                return lower
        return 0

    def _evict(self, level: int) -> None:
        cap = int(self.cap[level])
        over = int(self.count[level]) - cap
        if over <= 0:
            return
        need = min(over + int(cap * self.slack), int(self.count[level]))
        victims, got = [], 0
        p = int(self.ptr[level])
        while got < need and p < self.stamp:
            chunk = self.log[p:min(self.stamp, p + max(2 * (need - got), 1024))]
            ok = (self.tier[chunk] == level) & (self.last[chunk] == np.arange(p, p + chunk.size))
            idx = np.flatnonzero(ok)[: need - got]
            if idx.size:
                victims.append(chunk[idx])
                got += idx.size
            p = int(p + idx[-1] + 1) if got >= need else p + chunk.size
        self.ptr[level] = p
        if not victims:
            return
        v = np.concatenate(victims)
        self.count[level] -= v.size
        down = self._below(level)
        self.tier[v] = down
        if down:
            self.count[down] += v.size
            self._evict(down)


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


ROUTINGS = ("round_robin", "session", "prefix")
# prefix: cache-aware with a load cap, as SGLang's and Mooncake's routers do: pure longest-prefix routing would
# send every session to the instance that first cached the shared system prompt


def simulate(trace: Trace, block_tokens: int, capacities: tuple[int, int, int], instances: int = 1,
             routing: str = "round_robin", slack: float = 0.0) -> SimResult:
    """Replay ``trace`` over ``instances`` caches of ``capacities`` blocks each (HBM, host, storage)."""
    if routing not in ROUTINGS:
        raise ValueError(routing)
    log = int(trace.off[-1] + trace.ooff[-1])
    caches = [TieredCache(trace.n_unique, capacities, log, slack) for _ in range(instances)]
    n = len(trace)
    hits = np.zeros((n, 3), dtype=np.int64)
    miss = np.zeros(n, dtype=np.int64)
    inst = np.zeros(n, dtype=np.int64)
    load = np.zeros(instances, dtype=np.float64)
    has_session = bool((trace.session >= 0).all())
    mode = routing if routing != "session" or has_session else "prefix"
    for i in range(n):
        b = trace.blocks[trace.off[i]:trace.off[i + 1]]
        if mode == "round_robin" or instances == 1:
            k = i % instances
            plen, t = caches[k].lookup(b)
        elif mode == "session":
            k = int(trace.session[i]) % instances
            plen, t = caches[k].lookup(b)
        else:  # longest cached prefix among instances not overloaded (<= 10% above mean); ties: least loaded
            best = None
            limit = load.mean() * 1.1 + trace.input_length[i]
            for j, c in enumerate(caches):
                if load[j] > limit:
                    continue
                pl, tj = c.lookup(b)
                key = (pl, -load[j])
                if best is None or key > best[0]:
                    best = (key, j, pl, tj)
            _, k, plen, t = best
        inp = int(trace.input_length[i])
        per = np.bincount(t[:plen], minlength=4)[1:] * block_tokens
        hit = min(int(per.sum()), inp)
        if hit < per.sum():  # the last (partial) block of the input: count only its real tokens
            per[int(t[plen - 1]) - 1] -= int(per.sum()) - hit
        hits[i] = per
        miss[i] = inp - hit
        inst[i] = k
        load[k] += inp
        caches[k].touch(b)
        caches[k].touch(trace.out_blocks[trace.ooff[i]:trace.ooff[i + 1]])
    return SimResult(hits, miss, inst, routing, {"effective_routing": mode, "instances": instances,
                                                  "capacities_blocks": list(capacities)})


def simulate_reference(requests, block_tokens: int, capacities: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force single-instance reference with OrderedDicts (exact LRU, same semantics); for tests."""
    from collections import OrderedDict

    tiers = [OrderedDict(), OrderedDict(), OrderedDict()]
    hits = np.zeros((len(requests), 3), dtype=np.int64)
    miss = np.zeros(len(requests), dtype=np.int64)

    def where(h):
        return next((j for j, od in enumerate(tiers) if h in od), None)

    def touch(ids):
        for h in ids:
            w = where(h)
            if w is not None:
                del tiers[w][h]
            tiers[0][h] = True
        for j in range(3):
            while len(tiers[j]) > capacities[j]:
                victim, _ = tiers[j].popitem(last=False)
                lower = next((k for k in range(j + 1, 3) if capacities[k] > 0), None)
                if lower is not None:
                    tiers[lower][victim] = True  # stamps of demoted blocks are older than all of that tier's

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
        touch(r.hash_ids)
        touch(r.output_hash_ids or [])
    return hits, miss
