"""`python -m bench workload PATH... [--json FILE] [--format NAME] [--shared-prefix cold|warm] [--plots DIR]
[users=N model=NAME fleet.KEY=VALUE]`: the seed's decomposition of real agent traces and usage logs (bench.model.sessions),
each figure beside the seed's claim; with ``users=`` the fleet those sessions make (per-tier hit rates, the cache
per GPU that keeps 50/90/99% of the hits, the working set over time)."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from bench.core.units import count, seconds, sig


EXAMPLES = """examples:
  python -m bench workload traces/                         # a folder of WEKA's Claude Code traces
  python -m bench workload ~/.claude/projects/ --json usage.json
  python -m bench workload traces/ users=64 model=llama3_70b --plots plots/
  python -m bench model results/<run-id> trace=traces/ users=64   # the verdict for that workload"""


def parse(argv: list[str]):
    p = argparse.ArgumentParser(prog="python -m bench workload", description=__doc__.split("\n\n")[0],
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="trace or log files, or directories of them (recursive)")
    p.add_argument("--json", type=Path, help="write the figures (total and per conversation) to this file")
    p.add_argument("--format", help="force a format: weka, claude_code, codex, openai, qwen, mooncake")
    p.add_argument("--shared-prefix", choices=["cold", "warm"], default="cold",
                   help="the tools + system prompt every conversation shares: cached before it starts (warm) or as "
                        "the data has it (cold, default)")
    p.add_argument("--plots", type=Path, help="draw the pictures into this directory")
    a = p.parse_args([x for x in argv if "=" not in x or x.startswith("-")])
    a.overrides = [x for x in argv if "=" in x and not x.startswith("-")]
    return a


def cmd_workload(argv: list[str]) -> int:
    a = parse(argv)
    from bench.commands.overrides import compose_checked
    from bench.model import sessions as S
    from bench.model.traces import read_requests

    cfg = None
    if a.overrides:
        from bench.model.checks import validate_analysis

        cfg = compose_checked(a.overrides, config_name="analysis")
        validate_analysis(cfg)
    if a.json is not None:
        from bench.core.store import check_writable_dir

        check_writable_dir(a.json.parent if str(a.json.parent) else Path("."), "--json")
    table = read_requests(a.paths, a.format)
    res = S.summarize(table, a.shared_prefix)
    users = cfg.get("users") if cfg is not None else None
    if users is not None:
        res["fleet"] = fleet(table, cfg, int(users))
    print_summary(res, table)
    if a.json is not None:
        a.json.write_text(json.dumps(res, indent=1, default=float) + "\n")
        print(f"wrote {a.json}")
    if a.plots is not None:
        from bench.report import workload_plots as P

        for path in P.draw_all(res, a.plots):
            print(f"wrote {path}")
    return 0


def fleet(table, cfg, users: int) -> dict:
    """The fleet figures for ``users`` concurrent users of the model preset (model=, default llama3_70b)."""
    from omegaconf import OmegaConf

    from bench.llm.shapes import ModelShape
    from bench.model import sessions as S

    if cfg.model is None:
        from bench.commands.overrides import compose_checked

        cfg = OmegaConf.merge(cfg, {"model": compose_checked(["model=llama3_70b"]).model})
    shape = ModelShape.from_cfg(cfg.model)
    hbm = cfg.fleet.hbm_bytes or 80 * 2**30
    out = S.fleet_figures(table, shape.kv_bytes_per_token, cfg.fleet, users, hbm, shape.weight_bytes())
    out["model"] = shape.name
    out["hbm_assumed"] = cfg.fleet.hbm_bytes is None
    return out


def pct(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.1%}"


def print_summary(r: dict, table) -> None:
    t = r["total"]
    sub = r["subagents"]
    what = {"weka": "WEKA Claude Code traces", "claude_code": "Claude Code session logs", "codex": "Codex CLI logs",
            "openai": "OpenAI-style usage logs", "qwen": "Qwen/Bailian trace", "mooncake": "Mooncake trace"}
    print(f"{what.get(r['format'], r['format'])}: {r['conversations']} conversation(s), {t['requests']:,} requests "
          f"({sub['requests_share']:.1%} from {sub['agents']} sub-agents), {r['block_tokens']}-token blocks, "
          f"{r['scope']} ids" + (", block ids implied by the logged reads" if r["implied_blocks"] else ""))
    hit_note = "logged reads / input" if r["implied_blocks"] else \
        f"unlimited cache per {'conversation' if r['scope'] == 'local' else 'trace'}, shared prefix {r['shared_prefix']}"
    rw = t["read_write_ratio"]
    rows = [("hit rate", pct(t["hit_rate"]), f"{r['seed']['hit_rate']:.1%}", hit_note),
            ("reads per write", "n/a (writes not logged)" if rw is None else f"{sig(rw)}x",
             f"{r['seed']['read_write_ratio']:g}x", "cache read tokens / tokens computed and written"),
            ("input:output", f"{t['input_output_ratio']:.0f}:1", f"{r['seed']['input_output_ratio']:.0f}:1", ""),
            ("reuse time p50/p90/p99", " / ".join(seconds(t["reuse_s"][k]) for k in ("p50", "p90", "p99")),
             r["seed"]["persistence"], "since each hit block was last used")]
    print(f"  {'':24} {'this data':>28}  {'the seed':>16}")
    for name, mine, seed, how in rows:
        print(f"  {name:24} {mine:>28}  {seed:>16}  {how}")
    s = r["hit_rate_across_sessions"]
    if s:
        print("  hit rate across conversations: " + ", ".join(f"{k} {v:.0%}" for k, v in s.items()))
    g, th = r["context_growth_tokens"], r["think_s"]
    if g["mean"] is not None:
        print(f"  context growth per turn: mean {g['mean']:,.0f} tokens (p50 {g['p50']:,.0f}, p90 {g['p90']:,.0f})")
    if th["mean"] is not None:
        print(f"  think time: p50 {seconds(th['p50'])}, p90 {seconds(th['p90'])} ({th['from']})")
    w = t["cache_write_tokens"]
    print(f"  tokens: {count(t['input_tokens'])} input = {count(t['cache_read_tokens'])} read from cache + "
          + ("writes not logged" if w is None else f"{count(w)} computed and written")
          + (f" + {count(t['uncached_tokens'])} uncached" if t["uncached_tokens"] else "")
          + f"; {count(t['output_tokens'])} output; sub-agents {sub['input_share']:.1%} of the input")
    if r["simulated_hit_rate"] is not None:
        print(f"  replayed through the implied blocks, an unlimited cache hits {pct(r['simulated_hit_rate'])}")
    for note in r["notes"]:
        print(f"  note: {note}")
    f = r.get("fleet")
    if f is None:
        print("  the fleet these sessions make: add users=N (concurrent users; model=, fleet.* as for bench model)")
        return
    print(f"fleet: {f['users']} concurrent users of {f['model']} ({count(f['kv_bytes_per_token'], 'B')} of KV a "
          f"token), {f['instances']} instances of {f['gpus_per_instance']} GPU(s), {f['routing']} routing, over "
          f"{sig(f['span_minutes'] / 60)} h")
    tr = f["tiers"]
    print(f"  hit rate at the fleet's capacities: {pct(tr['hit_rate'])} (HBM {pct(tr['hit_rate_hbm'])}, host "
          f"{pct(tr['hit_rate_host'])}, NVMe {pct(tr['hit_rate_storage'])}) of an unlimited cache's "
          f"{pct(f['unlimited_hit_rate'])}")
    for share, k in f["keep_hits"].items():
        print(f"  to keep {share} of the hits: {count(k['bytes_per_gpu'], 'B')} of KV per GPU = HBM "
              f"{count(k['hbm_bytes'], 'B')} + host DRAM {count(k['host_bytes'], 'B')} + NVMe "
              f"{count(k['nvme_bytes'], 'B')}")
    ws = f["working_set"]
    print(f"  KV working set (blocks used before and again after): peak {count(ws['peak_bytes'], 'B')} across the "
          f"fleet" + (" (HBM assumed 80 GiB per GPU: set fleet.hbm_bytes)" if f["hbm_assumed"] else ""))
