"""Pictures of real agent sessions (from bench.model.sessions.summarize's result, no table needed): one session's
requests as stacked bars of cache reads, writes and output (the seed's picture), the hit rate across sessions, the
reuse-time distribution and, with a fleet, the KV working set over time. Tokens, seconds, bytes."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from bench.report.plotkit import finish, plt, save


def session_bars(r: dict, path) -> Optional[str]:
    """One conversation's requests in order: each bar its input split into cache reads, writes (computed) and
    uncached input, with its output on top."""
    ex = r.get("example_session") or {}
    if not ex.get("read"):
        return None
    n = len(ex["read"])
    x = np.arange(n)
    read, write, unc, out = (np.asarray(ex[k], float) for k in ("read", "write", "uncached", "output"))
    fig, ax = plt.subplots(figsize=(max(8, min(16, n / 12)), 4.6))
    ax.bar(x, read, 1.0, color="#4c72b0", label="cache read")
    ax.bar(x, write, 1.0, bottom=read, color="#dd8452", label="written (computed)")
    if unc.any():
        ax.bar(x, unc, 1.0, bottom=read + write, color="#937860", label="uncached")
    ax.bar(x, out, 1.0, bottom=read + write + unc, color="#55a868", label="output")
    sub = np.asarray(ex.get("subagent") or [False] * n, bool)
    if sub.any():
        ax.scatter(x[sub], (read + write + unc + out)[sub] * 1.02, marker="v", s=8, color="black",
                   label="sub-agent request")
    finish(ax, "request (in order)", "tokens", f"One session's requests: {ex['name']} ({r['format']}, "
                                                f"{r['block_tokens']}-token blocks)")
    return save(fig, path)


def hit_rates(r: dict, path) -> Optional[str]:
    """The hit rate of every conversation, sorted, with the total and the seed's claim."""
    rates = sorted(x for x in r.get("session_hit_rates") or [] if x == x)
    if not rates:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.4))
    ax.plot(np.linspace(0, 1, len(rates)), rates, marker="." if len(rates) < 200 else None, lw=1.5,
            label=f"{len(rates)} conversations")
    ax.axhline(r["total"]["hit_rate"], color="black", ls="--", lw=1, label=f"total {r['total']['hit_rate']:.1%}")
    ax.axhline(r["seed"]["hit_rate"], color="red", ls=":", lw=1, label=f"the seed's {r['seed']['hit_rate']:.1%}")
    finish(ax, "share of conversations (sorted by hit rate)", "KV hit rate", "Hit rate across sessions")
    return save(fig, path)


def reuse_times(r: dict, path) -> Optional[str]:
    """The distribution of reuse times (since each hit block was last used), log time axis."""
    cdf = r.get("reuse_cdf") or {}
    if not cdf.get("seconds"):
        return None
    fig, ax = plt.subplots(figsize=(8, 4.4))
    secs = np.maximum(np.asarray(cdf["seconds"], float), 1e-3)
    ax.plot(secs, cdf["share"], lw=1.8, label="hit blocks")
    for s, name in ((60, "1 min"), (3600, "1 h")):
        ax.axvline(s, color="grey", ls=":", lw=1)
        ax.text(s, 0.02, name, fontsize=7, color="grey")
    ax.set_xscale("log")
    finish(ax, "time since the block was last used (s)", "share of hits kept if blocks stay this long",
           "Reuse time of the hits")
    return save(fig, path)


def working_set(r: dict, path) -> Optional[str]:
    ws = ((r.get("fleet") or {}).get("working_set")) or {}
    if not ws.get("minutes"):
        return None
    fig, ax = plt.subplots(figsize=(8, 4.4))
    ax.plot(np.asarray(ws["minutes"]) / 60, np.asarray(ws["bytes"]) / 1e12, lw=1.6)
    f = r["fleet"]
    finish(ax, "hours", "KV working set (TB)", f"KV working set over time: {f['users']} users of {f['model']}")
    return save(fig, path)


PLOTS = (("session_bars", session_bars), ("hit_rates", hit_rates), ("reuse_times", reuse_times),
         ("working_set", working_set))


def draw_all(r: dict, out) -> list[str]:
    """Every picture that has data, as PNGs in ``out``; their paths."""
    out = Path(out)
    return [p for name, fn in PLOTS if (p := fn(r, out / f"{name}.png"))]
