"""Usage logs: what agents' own logs record of each request's tokens (no block ids), into the request table.

- Claude Code session logs (``~/.claude/projects/<project>/<session>.jsonl``; sub-agents in
  ``<session>/subagents/agent-*.jsonl`` or ``agent-*.jsonl``, lines with ``isSidechain: true``): assistant lines
  carry ``message.id``, ``message.model``, ``timestamp``, ``sessionId`` (``agentId`` for a sub-agent) and
  ``message.usage`` {``input_tokens`` (uncached only), ``cache_creation_input_tokens``, ``cache_read_input_tokens``,
  ``output_tokens``}. One response is written as several lines with the same ``message.id`` (streaming
  snapshots): each response counts once, its last line's usage.
- Codex CLI session logs (``~/.codex/sessions/.../rollout-*.jsonl``): ``event_msg`` lines of ``payload.type``
  ``token_count`` with ``payload.info.last_token_usage`` {``input_tokens`` (cached included),
  ``cached_input_tokens``, ``output_tokens``}; a repeated identical event counts once; ``session_meta`` names the
  session, ``turn_context`` the model.
- OpenAI-style usage JSONL: a ``usage`` object with ``prompt_tokens``, ``completion_tokens`` and
  ``prompt_tokens_details.cached_tokens``; ``session_id`` / ``conversation_id`` group requests (else the file).

OpenAI-style logs count cached tokens as part of the input and no writes: reads are the cached tokens, writes are
not told apart (-1), uncached input is the rest. The prefix structure the logs imply is built for the simulator:
within a conversation's agent, a request's cached part is a prefix of that agent's previous context (its input and
output); reads beyond what the agent's history holds (a first request that reads the tools and system prompt every
conversation caches) are a prefix shared by every conversation. Block ids are then fresh for everything written.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from datetime import datetime
from pathlib import Path

import numpy as np

from bench.core.errors import UserError
from bench.model.traces.table import RequestTable

BLOCK_TOKENS = 64  # the granularity implied blocks are built at (WEKA's traces use 64 as well)


def detect_claude(obj) -> bool:
    return isinstance(obj, dict) and ("sessionId" in obj or obj.get("type") in ("summary", "file-history-snapshot")) \
        and ("message" in obj or "uuid" in obj or obj.get("type") in ("summary", "file-history-snapshot"))


def detect_codex(obj) -> bool:
    return isinstance(obj, dict) and "payload" in obj and obj.get("type") in ("session_meta", "event_msg",
                                                                             "response_item", "turn_context")


def detect_openai(obj) -> bool:
    u = obj.get("usage") if isinstance(obj, dict) else None
    return isinstance(u, dict) and "prompt_tokens" in u


def _lines(path: Path, loads):
    """(line number, object) of each non-empty line; a line that is not JSON is one error naming it."""
    with open(path, "rb") as f:
        for no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                yield no, loads(raw)
            except Exception as e:
                raise UserError(f"{path}: line {no} is not JSON ({type(e).__name__}: {str(e).splitlines()[0][:100]})"
                                ) from None


def _tokens(v, path, no, key) -> int:
    if v is None:
        return 0
    if type(v) is not int or v < 0:
        raise UserError(f"{path}: line {no}: {key}={v!r} is not a token count (an integer >= 0)")
    return v


def _time(v, path, no) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    try:
        return datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise UserError(f"{path}: line {no}: timestamp {v!r} is neither ISO 8601 nor seconds") from None


def read_claude(paths: list[Path], loads) -> RequestTable:
    """Every response of Claude Code session logs, each message.id once (its last line)."""
    rows: "OrderedDict[tuple, dict]" = OrderedDict()
    for path in paths:
        sub = path.name.startswith("agent-")
        for no, d in _lines(path, loads):
            if d.get("type") != "assistant" or not isinstance(d.get("message"), dict):
                continue
            m = d["message"]
            u = m.get("usage")
            if not isinstance(u, dict):
                continue
            session = str(d.get("sessionId") or path.parent.name if sub else d.get("sessionId") or path.stem)
            agent = str(d.get("agentId") or path.stem) if (d.get("isSidechain") or sub) else ""
            key = (session, str(m.get("id") or d.get("requestId") or f"{path}:{no}"))
            rows[key] = {"session": session, "agent": agent, "t": _time(d.get("timestamp"), path, no),
                         "model": str(m.get("model") or "?"),
                         "uncached": _tokens(u.get("input_tokens"), path, no, "input_tokens"),
                         "write": _tokens(u.get("cache_creation_input_tokens"), path, no, "cache_creation_input_tokens"),
                         "read": _tokens(u.get("cache_read_input_tokens"), path, no, "cache_read_input_tokens"),
                         "out": _tokens(u.get("output_tokens"), path, no, "output_tokens")}
    return _table("claude_code", list(rows.values()), paths,
                  "usage as logged (message.usage), each message.id once; block ids implied by the logged reads")


def read_codex(paths: list[Path], loads) -> RequestTable:
    """Every token_count event of Codex CLI session logs (an identical repeat counts once)."""
    rows = []
    for path in paths:
        session, model, last = path.stem, "?", None
        for no, d in _lines(path, loads):
            p = d.get("payload") or {}
            if d.get("type") == "session_meta":
                session = str(p.get("id") or session)
            elif d.get("type") == "turn_context":
                model = str(p.get("model") or model)
            elif d.get("type") == "event_msg" and p.get("type") == "token_count" and p.get("info"):
                u = p["info"].get("last_token_usage") or {}
                inp = _tokens(u.get("input_tokens"), path, no, "input_tokens")
                cached = _tokens(u.get("cached_input_tokens"), path, no, "cached_input_tokens")
                if cached > inp:
                    raise UserError(f"{path}: line {no}: cached_input_tokens {cached} > input_tokens {inp}")
                key = (inp, cached, u.get("output_tokens"), json_key(p["info"].get("total_token_usage")))
                if key == last:
                    continue
                last = key
                rows.append({"session": session, "agent": "", "t": _time(d.get("timestamp"), path, no),
                             "model": model, "uncached": inp - cached, "write": -1, "read": cached,
                             "out": _tokens(u.get("output_tokens"), path, no, "output_tokens")})
    return _table("codex", rows, paths, "usage as logged (last_token_usage; cached is part of input, writes not "
                                        "logged); block ids implied by the logged reads")


def read_openai(paths: list[Path], loads) -> RequestTable:
    """Every line with an OpenAI-style ``usage`` object."""
    rows = []
    for path in paths:
        for no, d in _lines(path, loads):
            u = d.get("usage")
            if not isinstance(u, dict) or "prompt_tokens" not in u:
                continue
            inp = _tokens(u.get("prompt_tokens"), path, no, "prompt_tokens")
            cached = _tokens((u.get("prompt_tokens_details") or {}).get("cached_tokens"), path, no, "cached_tokens")
            if cached > inp:
                raise UserError(f"{path}: line {no}: cached_tokens {cached} > prompt_tokens {inp}")
            rows.append({"session": str(d.get("session_id") or d.get("conversation_id") or path.stem), "agent": "",
                         "t": _time(d.get("created", d.get("timestamp", no)), path, no),
                         "model": str(d.get("model") or "?"), "uncached": inp - cached, "write": -1, "read": cached,
                         "out": _tokens(u.get("completion_tokens"), path, no, "completion_tokens")})
    return _table("openai", rows, paths, "usage as logged (cached_tokens is part of prompt_tokens, writes not "
                                         "logged); block ids implied by the logged reads")


def json_key(v) -> str:
    return repr(sorted(v.items())) if isinstance(v, dict) else repr(v)


def _table(source: str, rows: list[dict], paths, note: str) -> RequestTable:
    if not rows:
        raise UserError(f"{', '.join(map(str, paths[:3]))}{' ...' if len(paths) > 3 else ''}: no request with usage "
                        f"found ({source} format)")
    rows.sort(key=lambda r: (r["session"], r["t"]))
    names = tuple(dict.fromkeys(r["session"] for r in rows))
    conv_of = {s: i for i, s in enumerate(names)}
    agents = tuple(dict.fromkeys(f"{r['session']}/{r['agent']}" for r in rows if r["agent"]))
    agent_of = {a: i for i, a in enumerate(agents)}
    models = tuple(dict.fromkeys(r["model"] for r in rows))
    model_of = {m: i for i, m in enumerate(models)}
    read = np.asarray([r["read"] for r in rows], np.int64)
    write = np.asarray([r["write"] for r in rows], np.int64)
    uncached = np.asarray([r["uncached"] for r in rows], np.int64)
    inp = read + np.maximum(write, 0) + uncached
    out = np.asarray([r["out"] for r in rows], np.int64)
    conv = np.asarray([conv_of[r["session"]] for r in rows], np.int64)
    agent = np.asarray([agent_of[f"{r['session']}/{r['agent']}"] if r["agent"] else -1 for r in rows], np.int64)
    t = np.asarray([r["t"] for r in rows], np.float64)
    blocks, off, out_blocks, ooff = imply_blocks(conv, agent, read, inp, out, BLOCK_TOKENS)
    keep = inp > 0  # a response that read and wrote nothing (an aborted stream) is no request
    if not keep.all():
        idx = np.flatnonzero(keep)
        from bench.model.cachesim import _regroup

        blocks, off = _regroup(blocks, off, idx)
        out_blocks, ooff = _regroup(out_blocks, ooff, idx)
        conv, agent, t, inp, out, read, write, uncached = (x[idx] for x in (conv, agent, t, inp, out, read, write,
                                                                             uncached))
    return RequestTable(source, BLOCK_TOKENS, "global", conv, names, agent, t, inp, out, blocks, off,
                        np.asarray([model_of[r["model"]] for r, k in zip(rows, keep) if k], np.int32), models, agents,
                        cache_read=read, cache_write=write, uncached=uncached, implied=True,
                        out_blocks=out_blocks, ooff=ooff, notes=(note,))


def imply_blocks(conv, agent, read, inp, out, bt: int):
    """Block ids for usage-log requests (in each (conversation, agent)'s time order): a request's first
    ``read // bt`` blocks are a prefix of its agent's previous context (its input, then the blocks its answer
    completed); an agent's first request reads a prefix of its conversation's main thread (a sub-agent) or of the
    prefix every conversation shares (the very first request's input: tools and system prompt); reads beyond what
    that holds, and everything written, are fresh blocks. Returns (blocks, off, out_blocks, ooff)."""
    counter = [0]
    shared: list = []

    def fresh(n: int) -> list:
        ids = list(range(counter[0], counter[0] + max(0, n)))
        counter[0] += max(0, n)
        return ids

    ctx: dict = {}
    ins, outs = [], []
    for i in range(len(inp)):
        key = (int(conv[i]), int(agent[i]))
        base = ctx.get(key)
        if base is None:  # the agent's first request
            base = ctx.get((int(conv[i]), -1), shared) if agent[i] >= 0 else shared
        n_in = int(inp[i]) // bt
        k = min(int(read[i]) // bt, n_in)
        ids = base[:k] + fresh(k - len(base))
        ids = ids + fresh(n_in - len(ids))
        if not shared:
            shared = list(ids)
        o = fresh((int(inp[i]) + int(out[i])) // bt - n_in)
        ins.append(ids)
        outs.append(o)
        ctx[key] = ids + o
    return _flat(ins) + _flat(outs)


def _flat(lists) -> tuple:
    lens = np.fromiter((len(x) for x in lists), np.int64, len(lists))
    off = np.zeros(len(lists) + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    flat = np.fromiter((v for x in lists for v in x), np.int64, int(off[-1]))
    return flat, off
