"""Workloads: multi-turn sessions described by a preset, a synthetic session generator that writes
Mooncake-format requests, and a reader for Mooncake traces.

Mooncake format (FAST'25 trace release): one JSON object per line with ``timestamp`` (ms), ``input_length`` and
``output_length`` (tokens) and ``hash_ids`` (one id per ``block_tokens`` block of the input; equal ids = equal
content, so a prefix cache can reuse them). We add an optional ``session_id`` for session-affinity routing.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from bench.errors import UserError


@dataclass(frozen=True)
class Workload:
    """One preset: every session shares ``shared_prefix_tokens`` (system prompt, tools), adds
    ``session_context_tokens`` of its own (repository, ticket), then runs ``turns`` turns of ``new_tokens``
    (user message / tool output) in and ``output_tokens`` out; each turn's input is the whole history."""

    name: str
    shared_prefix_tokens: int
    session_context_tokens: int
    turns: int
    new_tokens: int
    output_tokens: int
    spread: float = 0.5  # lognormal sigma of per-turn sizes and turn counts in the generator
    think_time_s: float = 5.0  # mean gap between a turn's answer and the next request of the session
    sessions_per_s: float = 1.0
    max_context_tokens: int = 131072  # a session ends when its next request would exceed the context window

    @classmethod
    def from_cfg(cls, w) -> "Workload":
        fields = cls.__dataclass_fields__
        return cls(**{k: w[k] for k in fields if k in w})

    def turn_shapes(self) -> list[tuple[int, int, int]]:
        """(cached tokens available, new tokens, output tokens) per turn of the mean session: the cached part is
        everything the session has seen before this turn's new tokens (the shared prefix even on turn 1)."""
        out = []
        ctx = self.shared_prefix_tokens
        first_new = self.session_context_tokens + self.new_tokens
        for t in range(self.turns):
            new = first_new if t == 0 else self.new_tokens
            out.append((ctx, new, self.output_tokens))
            ctx += new + self.output_tokens
        return out

    def summary(self) -> dict:
        """The figures a preset is calibrated against: hit rate, input:output, KV read/write."""
        shapes = self.turn_shapes()
        cached = sum(c for c, _, _ in shapes)
        inp = sum(c + n for c, n, _ in shapes)
        out = sum(o for _, _, o in shapes)
        written = sum(n + o for _, n, o in shapes)  # new KV per turn: the new input and the generated tokens
        return {"hit_rate": cached / inp, "input_output_ratio": inp / out, "kv_read_write_ratio": cached / written,
                "mean_input_tokens": inp / len(shapes), "max_context_tokens": shapes[-1][0] + shapes[-1][1],
                "turns": len(shapes)}


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


def generate(w: Workload, sessions: int, block_tokens: int, seed: int = 0) -> list[Request]:
    """Synthetic sessions: Poisson session arrivals, lognormal turn counts and sizes around the preset's means,
    think time between turns. Returns requests sorted by timestamp with Mooncake-style block hash ids."""
    if sessions < 1:
        raise UserError(f"sessions={sessions} is not allowed: at least 1")
    rng = np.random.default_rng(seed)
    ln = lambda mean: max(1, int(round(mean * rng.lognormal(-w.spread ** 2 / 2, w.spread))))  # noqa: E731
    shared_blocks = list(range(w.shared_prefix_tokens // block_tokens))
    next_id = len(shared_blocks)
    out: list[Request] = []
    t0 = 0.0
    for s in range(sessions):
        t0 += rng.exponential(1000.0 / w.sessions_per_s)
        turns = max(1, ln(w.turns))
        tokens = w.shared_prefix_tokens  # history length
        full_ids = list(shared_blocks)   # ids of the history's full blocks
        t = t0
        for k in range(turns):
            new = ln(w.session_context_tokens + w.new_tokens) if k == 0 else ln(w.new_tokens)
            outp = ln(w.output_tokens)
            if k and tokens + new + outp > w.max_context_tokens:
                break
            tokens += new
            n_full = tokens // block_tokens
            while len(full_ids) < n_full:
                full_ids.append(next_id)
                next_id += 1
            ids = list(full_ids)
            if tokens % block_tokens:  # the trailing partial block changes next turn: a fresh id each time
                ids.append(next_id)
                next_id += 1
            tokens += outp
            done = len(full_ids)
            while len(full_ids) < tokens // block_tokens:  # blocks the answer completes: cached by the server
                full_ids.append(next_id)
                next_id += 1
            out.append(Request(t, tokens - outp, outp, ids, s, full_ids[done:]))
            t += 1000.0 * rng.exponential(w.think_time_s)
    out.sort(key=lambda r: r.timestamp_ms)
    return out


def write_trace(reqs: Iterable[Request], path) -> None:
    with open(path, "w") as f:
        for r in reqs:
            f.write(r.to_json() + "\n")


def read_trace(path) -> list[Request]:
    """Read a Mooncake-format JSONL trace; a malformed line (not UTF-8, not JSON, a missing or mistyped field, a
    zero or negative length, a non-finite timestamp) is a one-line error naming the line and what is wrong."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"trace={str(path)!r} is a directory; give a Mooncake-format .jsonl file")
    if not p.is_file():
        raise UserError(f"trace {str(p)!r} does not exist")
    reqs = []
    with open(p, "rb") as f:
        for i, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"trace {p}: line {i} is not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r})"
                                ) from None
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                r = Request(float(d["timestamp"]), int(d["input_length"]), int(d["output_length"]),
                            [int(x) for x in d["hash_ids"]], d.get("session_id"),
                            [int(x) for x in d.get("output_hash_ids") or []])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
                raise UserError(f"trace {p}: line {i} is not a Mooncake record (timestamp, input_length, "
                                f"output_length, hash_ids): {type(e).__name__}: {e}") from None
            if r.input_length < 0 or r.output_length < 0:
                raise UserError(f"trace {p}: line {i} has a negative length (input_length={r.input_length}, "
                                f"output_length={r.output_length})")
            if r.input_length == 0:
                raise UserError(f"trace {p}: line {i} has input_length 0: a request needs at least one input token")
            if not math.isfinite(r.timestamp_ms):
                raise UserError(f"trace {p}: line {i} has a non-finite timestamp {d['timestamp']!r}")
            reqs.append(r)
    if not reqs:
        raise UserError(f"trace {p} is empty: no requests to replay")
    return reqs


def iter_blocks(reqs: list[Request]) -> Iterator[np.ndarray]:
    for r in reqs:
        yield np.asarray(r.hash_ids, dtype=np.int64)
