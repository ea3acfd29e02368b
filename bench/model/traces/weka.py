"""WEKA's Claude Code traces (github.com/callanjfox/kv-cache-tester, traces/, Apache-2.0): one JSON object per
conversation: ``id``, ``block_size`` (64), ``hash_id_scope`` ("local": ids scoped to the conversation, its
sub-agents sharing them; "global"), ``tool_tokens`` + ``system_tokens`` (the prefix every conversation shares in
production), ``requests[]`` of {``t`` (s from the conversation's start), ``in``, ``out``, ``hash_ids`` (full
blocks only: ``len == in // block_size``), ``model``, ``api_time``, ``think_time``, ...} and sub-agent entries
{``type``: "subagent", ``t``, ``agent_id``, ``subagent_type``, ``duration_ms``, ``requests[]`` timed from the
sub-agent's start}. In the public files a sub-agent's ``t`` is when it finished (it is taken from the parent's
tool result): it started ``duration_ms`` earlier, and that is where its requests are placed.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bench.core.errors import UserError
from bench.model.traces.table import RequestTable, ids_array

NAME = "weka"
ID_TEXT = b"0123456789,- \t\r\n"  # all a list of integer ids is written with


def detect(obj) -> bool:
    return isinstance(obj, dict) and "requests" in obj and "block_size" in obj and "hash_id_scope" in obj


def read(paths: list[Path], loads) -> RequestTable:
    """One table of every conversation in ``paths`` (one JSON object per file, parsed by ``loads``). A file whose
    hash_ids hold only integer digits (a regex over the raw text proves it) is converted at numpy's speed, the
    common case; any other id is found and named by the per-id checks."""
    cols = {k: [] for k in ("conv", "agent", "t", "inp", "out", "model", "api", "think", "ids", "nids")}
    names, agent_names, models, prefix = [], [], {}, []
    block, scope = None, None
    for path in paths:
        raw = path.read_bytes()
        d = _load(path, raw, loads)
        if not detect(d):
            raise UserError(f"{path}: not a WEKA Claude Code trace (no requests/block_size/hash_id_scope)")
        bs, sc = d.get("block_size"), d.get("hash_id_scope")
        if type(bs) is not int or bs < 1 or sc not in ("local", "global"):
            raise UserError(f"{path}: block_size={bs!r} hash_id_scope={sc!r}: expected an integer >= 1 and "
                            "local or global")
        if block is not None and (bs, sc) != (block, scope):
            raise UserError(f"{path}: block_size {bs} / scope {sc} differs from the other files' {block} / {scope}")
        block, scope = bs, sc
        c = len(names)
        names.append(str(d.get("id") or path.stem))
        prefix.append(_int(d.get("tool_tokens", 0) or 0, path, "tool_tokens") +
                      _int(d.get("system_tokens", 0) or 0, path, "system_tokens"))
        clean = ids_are_integers(raw)
        for k, r in enumerate(d["requests"]):
            if not isinstance(r, dict):
                raise UserError(f"{path}: requests[{k}] is not an object")
            if r.get("type") == "subagent":
                a = len(agent_names)
                agent_names.append(f"{names[c]}/{r.get('agent_id', a)} ({r.get('subagent_type') or 'sub-agent'})")
                start = _num(r.get("t", 0.0), path, f"requests[{k}].t") - \
                    (_num(r.get("duration_ms"), path, f"requests[{k}].duration_ms") / 1e3
                     if r.get("duration_ms") is not None else 0.0)
                for j, q in enumerate(r.get("requests") or []):
                    _row(cols, q, c, a, start, path, f"requests[{k}].requests[{j}]", models, clean)
            else:
                _row(cols, r, c, -1, 0.0, path, f"requests[{k}]", models, clean)
    if block is None:
        raise UserError("no WEKA trace files given")
    nids = np.asarray(cols["nids"], np.int64)
    off = np.zeros(len(nids) + 1, np.int64)
    np.cumsum(nids, out=off[1:])
    blocks = np.concatenate(cols["ids"]) if cols["ids"] else np.zeros(0, np.int64)  # int32 where every id fits
    nan = lambda xs: np.asarray([math.nan if x is None else x for x in xs], np.float64)  # noqa: E731
    cat = lambda key, dt: nan(cols[key]) if dt is None else np.asarray(cols[key], dt)  # noqa: E731
    return RequestTable(
        NAME, int(block), scope, cat("conv", np.int64), tuple(names), cat("agent", np.int64), cat("t", np.float64),
        cat("inp", np.int64), cat("out", np.int64), blocks, off, cat("model", np.int32), tuple(models),
        tuple(agent_names), api_s=cat("api", None), think_s=cat("think", None),
        shared_prefix_tokens=np.asarray(prefix, np.int64),
        notes=("sub-agents start duration_ms before their t (the public files record when they finished)",))


def ids_are_integers(raw: bytes) -> bool:
    """Whether every ``hash_ids`` list of a file's text holds integers only (digits, commas, signs, spaces)."""
    i = raw.find(b'"hash_ids"')
    while i >= 0:
        a = raw.find(b"[", i)
        b = raw.find(b"]", a)
        if a < 0 or b < 0 or raw[a + 1:b].translate(None, ID_TEXT):
            return False
        i = raw.find(b'"hash_ids"', b)
    return True


def _row(cols, r, c, agent, start, path, where, models, clean: bool) -> None:
    if not isinstance(r, dict):
        raise UserError(f"{path}: {where} is not an object")
    for key in ("t", "in", "out", "hash_ids"):
        if key not in r:
            raise UserError(f"{path}: {where} has no {key!r}")
    ids = r["hash_ids"]
    if not isinstance(ids, list):
        raise UserError(f"{path}: {where}.hash_ids is not a list")
    cols["conv"].append(c)
    cols["agent"].append(agent)
    cols["t"].append(start + _num(r["t"], path, f"{where}.t"))
    cols["inp"].append(_int(r["in"], path, f"{where}.in"))
    cols["out"].append(_int(r["out"], path, f"{where}.out"))
    cols["model"].append(models.setdefault(str(r.get("model") or "?"), len(models)))
    cols["api"].append(_opt(r.get("api_time"), path, f"{where}.api_time"))
    cols["think"].append(_opt(r.get("think_time"), path, f"{where}.think_time"))
    try:
        arr = np.fromiter(ids, np.int64, len(ids)) if clean else None
    except OverflowError:  # an id of 2**63 or more: folded (or refused beyond 64 bits) by the per-id check
        arr = None
    arr = arr if arr is not None else ids_array(ids, f"{path}: {where}")
    if len(arr) and -(1 << 31) <= int(arr.min()) and int(arr.max()) < (1 << 31):
        arr = arr.astype(np.int32)  # the common case (ids numbered per conversation): half the memory
    cols["ids"].append(arr)
    cols["nids"].append(len(ids))


def _load(path: Path, raw: bytes, loads):
    try:
        return loads(raw)
    except UserError:
        raise
    except Exception as e:  # not JSON (or an integer orjson cannot hold: the standard parser names it)
        if "64-bit" in str(e) or "Integer" in str(e):
            import json

            return json.loads(raw)
        raise UserError(f"{path}: not a JSON document ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None


def _num(v, path, where) -> float:
    if type(v) not in (int, float) or not math.isfinite(v):
        raise UserError(f"{path}: {where}={v!r} is not a finite number")
    return float(v)


def _int(v, path, where) -> int:
    if type(v) is not int:
        raise UserError(f"{path}: {where}={v!r} is not an integer")
    return v


def _opt(v, path, where):
    return None if v is None else _num(v, path, where)
