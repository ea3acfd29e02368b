"""Serving traces with block ids, one JSON object per line:

- Mooncake (FAST'25 release): ``timestamp`` (ms), ``input_length``, ``output_length``, ``hash_ids`` (one id per
  block of ``ceil(input / block)``, 512 tokens in the release; one namespace), and this suite's optional
  ``session_id`` and ``output_hash_ids`` (blocks the answer completes).
- Alibaba's Qwen/Bailian traces: ``chat_id``, ``parent_chat_id`` (-1 at a root), ``timestamp`` (s),
  ``input_length``, ``output_length``, ``type``, ``turn``, ``hash_ids`` over 16-token blocks (one namespace). A
  conversation is a root chat and every chat that descends from it.

Read column-wise by pyarrow where the file is clean (a million requests in seconds); a file pyarrow cannot take
as wholly well-typed (a string where an id goes, an id beyond 64 bits, a missing field) is read line by line, so
the first bad line is named in one line.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bench.core.errors import UserError
from bench.model.traces.table import RequestTable, ids_array

MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")
QWEN_FIELDS = ("chat_id", "parent_chat_id", "timestamp", "input_length", "output_length", "hash_ids")


def detect_mooncake(obj) -> bool:
    return isinstance(obj, dict) and "input_length" in obj and "timestamp" in obj and "chat_id" not in obj


def detect_qwen(obj) -> bool:
    return isinstance(obj, dict) and "chat_id" in obj and "parent_chat_id" in obj


def block_tokens_of(inp: np.ndarray, n_ids: np.ndarray, default: int) -> int:
    """The block size ids were cut at (``ceil(input / block)`` ids a request), from requests of several blocks: the
    power of two nearest the median of input / ids; ``default`` when no request tells."""
    sel = (n_ids >= 4) & (inp > 0)
    if not sel.any():
        return default
    est = float(np.median(inp[sel] / n_ids[sel]))
    return int(2 ** round(math.log2(est))) if est >= 1 else 1


def _columns(path: Path, fields: tuple, extra: tuple):
    """{field: numpy column} and the ids' (flat, offsets), by pyarrow, batch by batch (the file's JSON is never
    held whole: a 2M-request trace reads in a few seconds within the size of its columns); None when the file
    needs the strict reader."""
    try:
        import pyarrow as pa
        import pyarrow.json as pj

        reader = pj.open_json(path, read_options=pj.ReadOptions(block_size=READ_BLOCK))
        names = reader.schema.names
        if any(c not in names for c in fields):
            return None
        parts = {c: [] for c in fields if c != "hash_ids"}
        more = {c: [] for c in extra if c in names}
        flats, offs, shift = [], [], 0
        for batch in reader:
            if any(batch.column(c).null_count for c in fields):
                return None
            ids = batch.column("hash_ids")
            if not pa.types.is_list(ids.type) or not pa.types.is_integer(ids.type.value_type):
                return None
            for c, got in parts.items():
                got.append(batch.column(c).to_numpy())
            for c, got in more.items():
                got.append(batch.column(c))
            off = ids.offsets.to_numpy().astype(np.int64)
            vals = ids.values.to_numpy()[off[0]:off[-1]]
            vals = vals.view(np.int64) if vals.dtype.kind == "u" else vals
            small = vals.size == 0 or (int(vals.min()) >= -(1 << 31) and int(vals.max()) < (1 << 31))
            flats.append(vals.astype(np.int32 if small else np.int64))  # a copy: the batch's memory goes
            offs.append(off[:-1] - off[0] + shift)
            shift += int(off[-1] - off[0])
        if not offs:
            return None
        cols = {c: np.concatenate(v) for c, v in parts.items()}
        for c in ("input_length", "output_length"):
            if cols[c].dtype.kind not in "iu":
                return None
        for c, got in more.items():
            cols[c] = pa.concat_arrays(got)
        flat, off = np.concatenate(flats), np.concatenate(offs + [np.asarray([shift], np.int64)])
        del flats, offs, reader
        pa.default_memory_pool().release_unused()  # the parsed batches' memory back to the system, not kept
        return cols, flat, off
    except Exception:  # bad UTF-8, a malformed line, mixed types: the strict reader names it
        return None


READ_BLOCK = 16 << 20  # bytes of JSON pyarrow parses at a time


def _strict(path: Path, loads, fields: tuple, what: str):
    """The same columns, line by line: the first line that is not a well-typed record is one error naming it."""
    rows, ids, extra = [], [], []
    with open(path, "rb") as f:
        for no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                d = loads(raw)
            except Exception as e:
                if b"\\xff" in raw or not _utf8(raw):
                    raise UserError(f"{path}: line {no} is not UTF-8 text") from None
                raise UserError(f"{path}: line {no} is not JSON ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:100]})") from None
            if not isinstance(d, dict) or any(k not in d for k in fields):
                missing = [k for k in fields if not isinstance(d, dict) or k not in d]
                raise UserError(f"{path}: line {no} is not a {what} record (missing {', '.join(missing)})")
            for k in fields:
                v = d[k]
                if k == "hash_ids":
                    if not isinstance(v, list):
                        raise UserError(f"{path}: line {no}: hash_ids is not a list")
                elif k == "timestamp":
                    if type(v) not in (int, float) or not math.isfinite(v):
                        raise UserError(f"{path}: line {no}: timestamp={v!r} is not a finite number")
                elif type(v) is not int:
                    raise UserError(f"{path}: line {no}: {k}={v!r} is not an integer")
            rows.append([d[k] for k in fields if k != "hash_ids"])
            ids.append(ids_array(d["hash_ids"], f"{path}: line {no}", raw))
            extra.append(d)
    if not rows:
        raise UserError(f"{path}: empty: no requests")
    names = [k for k in fields if k != "hash_ids"]
    cols = {k: np.asarray([r[i] for r in rows]) for i, k in enumerate(names)}
    lens = np.fromiter(map(len, ids), np.int64, len(ids))
    off = np.zeros(len(ids) + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    return cols, np.concatenate(ids) if ids else np.zeros(0, np.int64), off, extra


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def read_mooncake(paths: list[Path], loads) -> RequestTable:
    parts = []
    for path in paths:
        got = _columns(path, MOONCAKE_FIELDS, ("session_id", "output_hash_ids"))
        if got is not None:
            cols, flat, off = got
            sess = cols.get("session_id")
            sess = sess.fill_null(-1).to_numpy().astype(np.int64) if sess is not None else \
                np.full(len(off) - 1, -1, np.int64)
            o = cols.get("output_hash_ids")
            if o is not None:
                ooff = o.offsets.to_numpy().astype(np.int64)
                oflat = o.values.to_numpy().astype(np.int64)[ooff[0]:ooff[-1]]
                olens = np.where(o.is_null().to_numpy(zero_copy_only=False), 0, np.diff(ooff))
            else:
                oflat, olens = np.zeros(0, np.int64), np.zeros(len(off) - 1, np.int64)
        else:
            cols, flat, off, extra = _strict(path, loads, MOONCAKE_FIELDS, "Mooncake")
            sess = np.asarray([_sid(d.get("session_id"), path) for d in extra], np.int64)
            outs = [ids_array(d.get("output_hash_ids") or [], f"{path}: output_hash_ids") for d in extra]
            oflat = np.concatenate(outs) if outs else np.zeros(0, np.int64)
            olens = np.fromiter(map(len, outs), np.int64, len(outs))
        parts.append((cols["timestamp"].astype(np.float64), cols["input_length"].astype(np.int64),
                      cols["output_length"].astype(np.int64), flat, off, sess, oflat, olens))
    ts, inp, out, flat, off, sess, oflat, olens = _concat(parts)
    bt = block_tokens_of(inp, np.diff(off), 512)
    conv_names = tuple(str(s) for s in np.unique(sess[sess >= 0]))
    index = {int(s): i for i, s in enumerate(np.unique(sess[sess >= 0]))}
    conv = np.asarray([index.get(int(s), -1) for s in sess], np.int64) if len(index) else np.full(len(sess), -1)
    ooff = np.zeros(len(olens) + 1, np.int64)
    np.cumsum(olens, out=ooff[1:])
    notes = () if (conv >= 0).all() else (f"{int((conv < 0).sum())} of {len(conv)} requests carry no session_id: "
                                          "session routing and per-session figures leave them out",)
    return RequestTable("mooncake", bt, "global", conv, conv_names, np.full(len(inp), -1, np.int64), ts / 1e3, inp,
                        out, flat, off, np.full(len(inp), -1, np.int32), out_blocks=oflat, ooff=ooff, notes=notes)


def _sid(v, path) -> int:
    if v is None:
        return -1
    if type(v) is not int:
        raise UserError(f"{path}: session_id={v!r} is not an integer")
    return v


def read_qwen(paths: list[Path], loads) -> RequestTable:
    parts, chats = [], []
    for path in paths:
        got = _columns(path, QWEN_FIELDS, ())
        if got is None:
            cols, flat, off, _ = _strict(path, loads, QWEN_FIELDS, "Qwen/Bailian")
        else:
            cols, flat, off = got
        chats.append((cols["chat_id"].astype(np.int64), cols["parent_chat_id"].astype(np.int64)))
        parts.append((cols["timestamp"].astype(np.float64), cols["input_length"].astype(np.int64),
                      cols["output_length"].astype(np.int64), flat, off, np.zeros(0), np.zeros(0, np.int64),
                      np.zeros(len(off) - 1, np.int64)))
    ts, inp, out, flat, off, _, _, _ = _concat(parts)
    chat = np.concatenate([c for c, _ in chats])
    parent = np.concatenate([p for _, p in chats])
    root = dict(zip(chat.tolist(), chat.tolist()))
    par = dict(zip(chat.tolist(), parent.tolist()))
    for c in chat.tolist():  # the root of each chat: follow parents (a parent missing from the file ends the walk)
        r, seen = c, 0
        while par.get(r, -1) >= 0 and par[r] in par and seen < 10_000:
            r, seen = par[r], seen + 1
        root[c] = r
    roots = np.asarray([root[c] for c in chat.tolist()], np.int64)
    uniq, conv = np.unique(roots, return_inverse=True)
    return RequestTable("qwen", 16, "global", conv.astype(np.int64), tuple(map(str, uniq.tolist())),
                        np.full(len(inp), -1, np.int64), ts, inp, out, flat, off, np.full(len(inp), -1, np.int32),
                        notes=("conversations: each root chat and the chats that descend from it",))


def _concat(parts):
    cols = list(zip(*parts))
    offs, shift = [], 0
    for off in cols[4]:
        offs.append(off[:-1] + shift)
        shift += int(off[-1])
    off = np.concatenate(offs + [np.asarray([shift], np.int64)])
    sess = np.concatenate(cols[5]) if len(cols[5]) and cols[5][0].size else np.zeros(0, np.int64)
    return (np.concatenate(cols[0]), np.concatenate(cols[1]), np.concatenate(cols[2]), np.concatenate(cols[3]), off,
            sess.astype(np.int64), np.concatenate(cols[6]).astype(np.int64), np.concatenate(cols[7]))
