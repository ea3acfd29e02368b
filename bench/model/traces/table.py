"""The one request table every trace or usage-log reader produces (bench.model.traces), checked once, and its
conversion to the cache simulator's Trace.

A row is one LLM request: which conversation it belongs to (the scope of its block ids when they are local, and
the unit of session routing), which agent of that conversation sent it (-1: the main thread; a sub-agent's
index otherwise), when (seconds), its input and output tokens, its input's block ids (``block_tokens`` tokens
each, full blocks), its model, and, where a usage log says so, its input split as logged into cache reads, cache
writes and uncached input (-1 where the source does not tell). Usage logs carry no block ids: their readers build
the prefix structure the logged reads imply (``implied``), so the simulator can replay them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from numba import njit

from bench.core.errors import UserError

UINT64 = 1 << 64


@dataclass(frozen=True)
class RequestTable:
    """Requests of one or more files in one format (module docstring). Arrays are per request, in each
    conversation's order; ``blocks[off[i]:off[i+1]]`` are request i's input block ids as the data gives them
    (conversation-scoped when ``scope`` is local)."""

    source: str  # the format (bench.model.traces.FORMATS)
    block_tokens: int
    scope: str  # local: ids name blocks of their conversation only; global: one namespace
    conversation: np.ndarray  # int64 index into ``names``
    names: tuple  # conversation names (a file's id, a session id)
    agent: np.ndarray  # int64: -1 the conversation's main thread, else an index into ``agent_names``
    time_s: np.ndarray  # float64 seconds (from the conversation's start for local traces)
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    blocks: np.ndarray  # int64, or int32 where every id fits (uint64 ids folded to int64 bit for bit: one id each)
    off: np.ndarray
    model: np.ndarray  # int32 index into ``models`` (-1 unknown)
    models: tuple = ()
    agent_names: tuple = ()  # "<conversation>/<agent id> (<type>)"
    cache_read: Optional[np.ndarray] = None  # tokens as logged (None: the source has no usage)
    cache_write: Optional[np.ndarray] = None  # -1 where the log does not tell writes apart (OpenAI-style usage)
    uncached: Optional[np.ndarray] = None
    api_s: Optional[np.ndarray] = None  # seconds the API took (nan: not logged)
    think_s: Optional[np.ndarray] = None  # seconds between the previous response and this request (nan: not logged)
    shared_prefix_tokens: Optional[np.ndarray] = None  # per conversation: tools + system tokens (0: not told)
    implied: bool = False  # block ids built from logged cache reads, not given by the data
    out_blocks: Optional[np.ndarray] = None  # blocks each answer completes (cached after it), where known
    ooff: Optional[np.ndarray] = None
    notes: tuple = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.input_tokens)

    def dense(self) -> tuple[np.ndarray, int]:
        """:func:`dense_blocks` of this table, computed once (the decomposition and the simulator's trace both
        need it; a 2M-request trace's ids take seconds to number)."""
        got = self.__dict__.get("_dense")
        if got is None:
            got = dense_blocks(self)
            object.__setattr__(self, "_dense", got)
        return got

    @property
    def n_blocks(self) -> np.ndarray:
        return np.diff(self.off)


def int_ids(values, where: str) -> np.ndarray:
    """Block ids as int64: ints of any sign up to 64 bits unsigned (ids of 2**63 and above keep their identity,
    folded bit for bit), never coerced from another type; anything else is one line naming it."""
    arr = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    if isinstance(arr, np.ndarray) and arr.dtype.kind in "iu":
        return arr.astype(np.uint64).view(np.int64) if arr.dtype.kind == "u" else arr.astype(np.int64)
    out = np.empty(len(values), np.int64)
    for i, v in enumerate(values):
        if type(v) is not int:
            raise UserError(f"{where}: hash id {v!r} is not an integer (ids are integers, never strings or floats)")
        if not -(1 << 63) <= v < UINT64:
            raise UserError(f"{where}: hash id {v} does not fit 64 bits (ids up to 2**64 - 1 are accepted)")
        out[i] = v - UINT64 if v >= (1 << 63) else v
    return out


def ids_array(ids: list, where: str, raw: bytes = b"") -> np.ndarray:
    """A parsed JSON list of block ids as int64, fast (numpy's own conversion) when every id is an integer that
    fits; anything else goes through :func:`int_ids` (folded, or one line naming the bad id). ``raw``: the line
    the list came from, so an id beyond 64 bits (a float once parsed) is named as it was written."""
    arr = np.array(ids) if ids else np.zeros(0, np.int64)
    if arr.dtype.kind == "i":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "u":
        return arr.view(np.int64)
    if arr.dtype.kind == "f" and not all(type(v) is int for v in ids):  # all ints: 2**64 - 1 beside small ids
        big = np.flatnonzero(np.abs(arr) >= 2.0 ** 63)  # a JSON integer beyond 64 bits: a float from the parser
        if big.size and float(arr[big[0]]).is_integer():
            typed = next((m.decode() for m in _LONG_INT.findall(raw) if not -(1 << 63) <= int(m) < UINT64),
                         f"{arr[big[0]]:.0f}")
            raise UserError(f"{where}: hash id {typed} does not fit 64 bits (ids up to 2**64 - 1 are accepted)")
    return int_ids(ids, where)


_LONG_INT = re.compile(rb"(?<![\w.])-?\d{19,}(?![\w.])")  # an integer literal that may lie beyond 64 bits

def check(t: RequestTable, where: str) -> RequestTable:
    """The table's values as data (once, for every reader): finite times, token counts >= 0 with input >= 1, ids
    no more than the input holds, logged usage that adds up. One line naming the first bad request."""
    n = len(t)
    if n == 0:
        raise UserError(f"{where}: no requests")
    for name in ("conversation", "agent", "time_s", "input_tokens", "output_tokens", "model"):
        if len(getattr(t, name)) != n:
            raise UserError(f"{where}: {name} has {len(getattr(t, name))} values for {n} requests")
    bad = np.flatnonzero(~np.isfinite(t.time_s))
    if bad.size:
        raise UserError(f"{where}: {_req(t, bad[0])} has a non-finite time ({t.time_s[bad[0]]})")
    bad = np.flatnonzero(t.input_tokens < 1)
    if bad.size:
        raise UserError(f"{where}: {_req(t, bad[0])} has input {t.input_tokens[bad[0]]}: a request needs at least "
                        "one input token")
    bad = np.flatnonzero(t.output_tokens < 0)
    if bad.size:
        raise UserError(f"{where}: {_req(t, bad[0])} has output {t.output_tokens[bad[0]]} < 0")
    over = np.flatnonzero((t.n_blocks - 1) * t.block_tokens >= t.input_tokens)
    if over.size:
        i = over[0]
        raise UserError(f"{where}: {_req(t, i)} has {t.n_blocks[i]} block ids of {t.block_tokens} tokens for "
                        f"{t.input_tokens[i]} input tokens (the ids do not match the lengths)")
    if t.cache_read is not None:
        parts = [x for x in (t.cache_read, t.cache_write, t.uncached) if x is not None]
        known = np.where(t.cache_write >= 0, t.cache_read + t.cache_write + t.uncached, t.cache_read + t.uncached)
        bad = np.flatnonzero((np.minimum.reduce(parts) < -1) | (known != t.input_tokens))
        if bad.size:
            raise UserError(f"{where}: {_req(t, bad[0])}: logged reads, writes and uncached input do not add up to "
                            f"its input ({t.input_tokens[bad[0]]} tokens)")
    return t


def _req(t: RequestTable, i: int) -> str:
    c = int(t.conversation[i])
    return f"request {int(i) + 1}" + (f" (conversation {t.names[c]})" if c >= 0 else "")


@njit(cache=True)
def _compact_local(ids, off, conv, width):
    """Dense ids for conversation-scoped ids in [0, width), each conversation's requests contiguous: a
    conversation's id k becomes one new id, shared by its requests only."""
    out = np.empty(len(ids), np.int64)
    slot = np.full(width, -1, np.int64)
    touched = np.empty(width, np.int64)
    nt = 0
    nxt = 0
    cur = -1
    for i in range(len(conv)):
        if conv[i] != cur:  # the next conversation: its ids are new
            for k in range(nt):
                slot[touched[k]] = -1
            nt = 0
            cur = conv[i]
        for j in range(off[i], off[i + 1]):
            b = ids[j]
            if slot[b] < 0:
                slot[b] = nxt
                touched[nt] = b
                nt += 1
                nxt += 1
            out[j] = slot[b]
    return out, nxt


def dense_blocks(t: RequestTable) -> tuple[np.ndarray, int]:
    """(dense block ids 0..n-1, n): ids of a local scope made distinct per conversation, of a global scope kept
    shared; equal ids stay equal, distinct stay distinct."""
    import pandas as pd

    ids = t.blocks
    if t.scope == "local" and len(ids):
        lo, hi = int(ids.min()), int(ids.max())
        runs = 1 + int(np.count_nonzero(np.diff(t.conversation)))
        if 0 <= lo and hi < (1 << 26) and runs == len(np.unique(t.conversation)):
            return _compact_local(ids, t.off, t.conversation.astype(np.int64), hi + 1)  # one pass, no sort
        conv = np.repeat(t.conversation, t.n_blocks)  # ids too wide for a table: factorize the pairs
        codes, _ = pd.MultiIndex.from_arrays([conv, ids]).factorize()
        return codes.astype(np.int64), int(codes.max()) + 1 if len(codes) else 0
    codes, uniq = pd.factorize(ids)
    return codes.astype(np.int32 if len(uniq) < (1 << 31) else np.int64), len(uniq)


SERVING = ("mooncake", "qwen")  # serving traces: their timeline is a fleet's already


def fleet_timeline_s(t: RequestTable, users: int) -> np.ndarray:
    """Each request's time (s) when ``users`` people run the conversations at once: each user takes the next
    conversation when theirs ends (its requests keep their own offsets: think and API times), users starting
    together. A serving trace (Mooncake, Qwen) keeps its own timestamps."""
    if t.source in SERVING or users is None:
        return t.time_s.astype(np.float64)
    n_conv = len(t.names)
    conv = t.conversation
    first = np.full(n_conv, np.inf)
    last = np.full(n_conv, -np.inf)
    np.minimum.at(first, conv, t.time_s)
    np.maximum.at(last, conv, t.time_s)
    start = np.zeros(n_conv)
    free = np.zeros(max(1, int(users)))
    for c in range(n_conv):  # the earliest free user takes the next conversation (1 s after their last one)
        u = int(np.argmin(free))
        start[c] = free[u]
        free[u] = start[c] + (last[c] - first[c]) + 1.0
    return t.time_s - first[conv] + start[conv]


def timeline_ms(t: RequestTable) -> np.ndarray:
    """Each request's time in ms on one clock: a global trace's own; local conversations (each from its own 0)
    laid end to end in their order, so no two overlap (the fleet replay spreads them over users instead)."""
    if t.scope != "local":
        return t.time_s * 1e3
    starts = np.zeros(len(t.names))
    ends = np.zeros(len(t.names))
    np.maximum.at(ends, t.conversation, t.time_s)
    starts[1:] = np.cumsum(ends[:-1] + 1.0)
    return (t.time_s + starts[t.conversation]) * 1e3


def to_trace(t: RequestTable, users: Optional[int] = None):
    """The cache simulator's Trace (bench.model.cachesim): dense ids, the conversation as the session (so session
    routing keeps a conversation and its sub-agents together), requests in time order: on the trace's own
    timeline (conversations of local ids end to end), or as ``users`` people run them at once."""
    from bench.model.cachesim import Trace

    dense, n = t.dense()
    ts = fleet_timeline_s(t, users) * 1e3 if users else timeline_ms(t)
    order = np.argsort(ts, kind="stable")
    out, ooff = (t.out_blocks, t.ooff) if t.out_blocks is not None else (np.zeros(0, np.int64),
                                                                         np.zeros(len(t) + 1, np.int64))
    if t.out_blocks is not None and len(out):  # answers' blocks (global ids): one dense numbering with the inputs'
        import pandas as pd

        codes, uniq = pd.factorize(np.concatenate([t.blocks, out]))
        dense, out, n = codes[:len(t.blocks)].astype(np.int64), codes[len(t.blocks):].astype(np.int64), len(uniq)
    if n < (1 << 31):  # half the memory of the largest array (a 2M-request trace: 48M ids)
        dense, out = dense.astype(np.int32, copy=False), out.astype(np.int32, copy=False)
    tr = Trace(dense, t.off.copy(), out, ooff.copy(), t.input_tokens.astype(np.int64),
               t.output_tokens.astype(np.int64), t.conversation.astype(np.int64), n, ts)
    return tr.take(order) if np.any(order != np.arange(len(order))) else tr
