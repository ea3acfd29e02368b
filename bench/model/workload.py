"""Workloads: multi-turn sessions described by a preset and a synthetic session generator (straight into the
simulator's Trace, or as Mooncake-format requests to write a trace). Real traces and logs: bench.model.traces.

Mooncake format (FAST'25 trace release): one JSON object per line with ``timestamp`` (ms), ``input_length`` and
``output_length`` (tokens) and ``hash_ids`` (one id per ``block_tokens`` block of the input; equal ids = equal
content, so a prefix cache can reuse them). We add an optional ``session_id`` for session-affinity routing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
from numba import njit

from bench.core.errors import UserError
from bench.llm.workload import Workload  # noqa: F401  (the preset's shape; traces are generated from it here)


@dataclass
class Request:
    timestamp_ms: float
    input_length: int
    output_length: int
    hash_ids: list
    session_id: Optional[int] = None
    output_hash_ids: Optional[list] = None  # blocks completed while decoding (our extension; cached after the request)

    def to_json(self) -> str:
        d = {"timestamp": round(self.timestamp_ms, 3), "input_length": self.input_length,
             "output_length": self.output_length, "hash_ids": self.hash_ids}
        if self.session_id is not None:
            d["session_id"] = self.session_id
        if self.output_hash_ids:
            d["output_hash_ids"] = self.output_hash_ids
        return json.dumps(d, separators=(",", ":"))


def _draws(w: Workload, sessions: int, seed: int):
    """The generator's random numbers, drawn at once: session arrival gaps and turn counts, then per turn (of every
    session, in order) its new and output token counts and the think time after it (lognormal around the preset's
    means with sigma ``spread``, exponential gaps)."""
    rng = np.random.default_rng(seed)
    sig = float(w.spread)
    ln = lambda mean, size: np.maximum(1, np.round(mean * rng.lognormal(-sig ** 2 / 2, sig, size))).astype(np.int64)
    gaps = rng.exponential(1000.0 / w.sessions_per_s, sessions)
    turns = np.maximum(1, ln(w.turns, sessions))
    total = int(turns.sum())
    first = np.zeros(total, np.bool_)
    first[np.concatenate([[0], np.cumsum(turns)[:-1]])] = True
    new = np.where(first, ln(w.session_context_tokens + w.new_tokens, total), ln(w.new_tokens, total))
    outp = ln(w.output_tokens, total)
    think = 1000.0 * rng.exponential(w.think_time_s, total)
    return np.cumsum(gaps), turns, new, outp, think


@njit(cache=True)
def _sessions(draws, shared_blocks, shared_tokens, block_tokens, max_ctx, where, owhere):
    """Walk every session's turns: each request's input is the session's whole history (its full blocks, then a
    fresh id for a trailing partial block), the blocks its answer completes are its output ids. The first call
    (``where`` empty) returns each request's timestamp and id counts; the second writes every request's ids at
    ``where[r]`` / ``owhere[r]`` (its place in timestamp order) and returns them. ``draws``: (session start times,
    turns, new and output tokens per turn, think times) as :func:`_draws` gives them."""
    t0, turns, new, outp, think = draws
    write = len(where) > 0
    n_req = 0
    for s in range(len(turns)):
        n_req += turns[s]
    ts = np.empty(n_req, np.float64)
    il = np.empty(n_req, np.int64)
    ol = np.empty(n_req, np.int64)
    sess = np.empty(n_req, np.int64)
    lens = np.empty(n_req, np.int64)
    olens = np.empty(n_req, np.int64)
    blocks = np.empty(where[-1] if write else 0, np.int64)
    oblocks = np.empty(owhere[-1] if write else 0, np.int64)
    full = np.empty(max(1, max_ctx // block_tokens + 2 + shared_blocks), np.int64)
    next_id = shared_blocks
    r = 0
    k0 = 0
    for s in range(len(turns)):
        tokens = shared_tokens
        nf = shared_blocks
        for j in range(shared_blocks):
            full[j] = j
        t = t0[s]
        for k in range(turns[s]):
            nw, op = new[k0 + k], outp[k0 + k]
            if k and tokens + nw + op > max_ctx:
                break
            tokens += nw
            n_full = tokens // block_tokens
            while nf < n_full:
                full[nf] = next_id
                next_id += 1
                nf += 1
            partial = tokens % block_tokens != 0
            if write:
                w0 = where[r]
                for j in range(n_full):
                    blocks[w0 + j] = full[j]
                if partial:
                    blocks[w0 + n_full] = next_id
            if partial:
                next_id += 1
            lens[r] = n_full + (1 if partial else 0)
            tokens += op
            done = nf
            while nf < tokens // block_tokens:  # blocks the answer completes: cached by the server
                full[nf] = next_id
                next_id += 1
                nf += 1
            if write:
                for j in range(done, nf):
                    oblocks[owhere[r] + j - done] = full[j]
            olens[r] = nf - done
            ts[r] = t
            il[r] = tokens - op
            ol[r] = op
            sess[r] = s
            r += 1
            t += think[k0 + k]
        k0 += turns[s]
    return r, next_id, ts[:r], il[:r], ol[:r], sess[:r], lens[:r], olens[:r], blocks, oblocks


def generate_trace(w: Workload, sessions: int, block_tokens: int, seed: int = 0):
    """Synthetic sessions straight into a simulator Trace (timestamp order): Poisson session arrivals, lognormal turn
    counts and sizes around the preset's means, think time between turns, Mooncake-style block ids (dense)."""
    from bench.model.cachesim import Trace

    if sessions < 1:
        raise UserError(f"sessions={sessions} is not allowed: at least 1")
    t0, turns, new, outp, think = _draws(w, sessions, seed)
    args = ((t0, turns, new, outp, think), int(w.shared_prefix_tokens // block_tokens), int(w.shared_prefix_tokens),
            int(block_tokens), int(w.max_context_tokens))
    n, n_ids, ts, il, ol, sess, lens, olens, _, _ = _sessions(*args, np.zeros(0, np.int64), np.zeros(0, np.int64))
    order = np.argsort(ts, kind="stable")  # place every request's ids in timestamp order directly
    off = np.zeros(n + 1, np.int64)
    np.cumsum(lens[order], out=off[1:])
    ooff = np.zeros(n + 1, np.int64)
    np.cumsum(olens[order], out=ooff[1:])
    where = np.empty(n + 1, np.int64)
    where[order] = off[:-1]
    where[n] = off[-1]
    owhere = np.empty(n + 1, np.int64)
    owhere[order] = ooff[:-1]
    owhere[n] = ooff[-1]
    blocks, oblocks = _sessions(*args, where, owhere)[8:]
    return Trace(blocks, off, oblocks, ooff, il[order], ol[order], sess[order], int(n_ids), ts[order])


def generate(w: Workload, sessions: int, block_tokens: int, seed: int = 0) -> list[Request]:
    """The sessions of :func:`generate_trace` as Mooncake requests (timestamp order), e.g. to write a trace."""
    tr = generate_trace(w, sessions, block_tokens, seed)
    return requests_of(tr)


def requests_of(tr) -> list[Request]:
    """A Trace's requests as Mooncake records (block ids as the trace holds them)."""
    out = []
    for i in range(len(tr)):
        out.append(Request(float(tr.timestamp_ms[i]), int(tr.input_length[i]), int(tr.output_length[i]),
                           tr.blocks[tr.off[i]:tr.off[i + 1]].tolist(), int(tr.session[i]),
                           tr.out_blocks[tr.ooff[i]:tr.ooff[i + 1]].tolist()))
    return out


def write_trace(reqs: Iterable[Request], path) -> None:
    with open(path, "w") as f:
        for r in reqs:
            f.write(r.to_json() + "\n")
