"""`python -m bench model RUN_DIR [overrides]`: the throughput model and the 2x verdict for a measured run."""
from __future__ import annotations

import json
from pathlib import Path

from bench.core.errors import UserError
from bench.core.units import seconds, sig

HELP = """usage: python -m bench model RUN_DIR [OVERRIDE ...] [--json]

Fit prefill/decode/tier costs from RUN_DIR's records, replay a workload through a tiered KV cache, and say how
much throughput KV reuse buys on that hardware (and whether "up to 2x" holds). Overrides (Hydra):
  workload=agentic_coding|agentic_coding_copilot|chatbot|customer_support
  fleet=default|seed_50_50   fleet.gpus=64 fleet.mode=disaggregated|colocated fleet.prefill_fraction=0.5
  fleet.ttft_ms=2000 fleet.tpot_ms=100 fleet.slo_attainment=0.9
                             latency targets for goodput (default: the workload preset's; 0 = none)
  fleet.host_bytes_per_gpu=... fleet.routings=[session,prefix,round_robin]
  trace=PATH.jsonl           replay a Mooncake-format trace instead of synthetic sessions
  fleet.load_cost=auto|measured|bandwidth
                             KV load time on the prefill path: measured layer-wise exposure (layerwise_load
                             records; auto uses them when present) or bytes / tier GB/s
  hit_rate=0.9               what-if: every request reuses this fraction of its input
  out=DIR                    where model.json and the plots go (default RUN_DIR/model-<workload>)
  plots=false                model.json only (no PNGs; about 5 s sooner)
  --json                     print the JSON result instead of the table
"""


def cmd_model(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(HELP)
        return 0
    as_json = "--json" in argv
    args = [a for a in argv if a != "--json"]
    run_dir, overrides = args[0], args[1:]
    if "=" in run_dir:
        raise UserError(f"first argument must be a run directory, got override {run_dir!r}")
    from bench.model.analyze import analyze
    from bench.model.checks import validate_analysis
    from bench.commands.overrides import compose_checked

    cfg = compose_checked(overrides, config_name="analysis")
    validate_analysis(cfg)
    check_output_place(run_dir, cfg.out)
    with steps_bar() as progress:
        result = analyze(run_dir, cfg, progress)
    out = write_result(result, Path(cfg.out) if cfg.out else None, plots=bool(cfg.plots))
    if as_json:
        print(json.dumps(result, indent=2, default=float))
    else:
        print_table(result, out)
    return 0


class steps_bar:
    """A progress bar over the model's steps on a terminal's stderr (a 2M-request trace takes half a minute):
    which step runs, how many are done, the time so far; nothing in a log."""

    def __enter__(self):
        import sys

        if not sys.stderr.isatty():
            self.bar = None
            return None
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from bench.report.console import console

        self.bar = Progress(TextColumn("model: {task.description}"), BarColumn(), TextColumn("{task.completed}/"
                            "{task.total} steps"), TimeElapsedColumn(), console=console(stderr=True), transient=True)
        self.bar.__enter__()
        self.task = self.bar.add_task("load", total=1)

        def progress(name: str, i: int, n: int) -> None:
            self.bar.update(self.task, description=name.replace("_", " "), completed=i, total=n)

        return progress

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False


def check_output_place(run_dir: str, out) -> None:
    """Before any analysis: the analysis can be written where it goes (``out=``, else the run directory), or one
    line saying how to put it elsewhere. Never a folder the user did not name."""
    from bench.core.store import check_writable_dir

    if out:
        check_writable_dir(out, "out")
        return
    if Path(run_dir).is_dir():
        try:
            check_writable_dir(run_dir, "run directory")
        except UserError as e:
            raise UserError(f"{e}; write the analysis elsewhere with out=DIR: python -m bench model {run_dir} "
                            "out=DIR") from None


def write_result(result: dict, out=None, plots: bool = True) -> Path:
    """model.json and (``plots``) the plots into ``out`` (default: the variant's own folder in the run directory);
    a place that cannot be written is one line saying how to write elsewhere (``out=``)."""
    from bench.core.store import check_writable_dir
    from bench.model.analyze import write_model_json

    out = Path(out or Path(result["run"]) / result["variant"])
    try:
        check_writable_dir(out, "out")
        out.mkdir(parents=True, exist_ok=True)
    except (UserError, OSError) as e:
        raise UserError(f"cannot write the analysis to {out} ({e}); write it elsewhere: python -m bench model "
                        f"{result['run']} out=DIR") from None
    if not plots:
        result["plots"] = {}
        write_model_json(result, out)
        return out
    from bench.report import model_plots as P

    result["plots"] = {"speedup_vs_hit_rate": P.speedup_vs_hit_rate(result, out / "speedup_vs_hit_rate.png"),
                       "gpu_split": P.gpu_split(result, out / "gpu_split.png"),
                       "break_even": P.break_even(result, out / "break_even.png"),
                       "capacity": P.capacity(result, out / "capacity.png"),
                       "persistence": P.persistence(result, out / "persistence.png"),
                       "goodput": P.goodput(result, out / "goodput.png"),
                       "disaggregation": P.disaggregation(result, out / "disaggregation.png")}
    if result.get("trace"):  # real sessions: their pictures too (bench workload --plots draws the same)
        from bench.report import workload_plots as W

        result["plots"].update({f"trace_{k}": fn(result["trace"], out / f"trace_{k}.png") for k, fn in W.PLOTS})
    write_model_json(result, out)
    return out


def print_table(r: dict, out: Path) -> None:
    from rich.markup import escape as esc
    from rich.table import Table

    from bench.core.units import rate as fmt_rate
    from bench.report.console import console, plain

    con = console()
    con.print(f"[bold]{esc(r['verdict']['headline'])}[/bold] (tables and details below; the answer again last)")
    u = r["cost_unit"]
    t = Table(title=f"{r['model']} on {r['gpu']}, {r['workload']['kind']} {r['workload']['label']}, "
                    f"{r['fleet']['gpus']} {'GPUs' if u == 'GPU-s' else 'devices (CPU costs)'}")
    t.add_column("scenario", justify="left")
    for col in (f"prefill {u}/req", f"decode {u}/req", "split P:D", "req/s", "out tok/s", "speedup",
                "tier bandwidth", "break-even"):
        t.add_column(col, justify="right")
    b = r["baseline"]
    split = lambda v: f"{v['prefill_gpus']}:{v['decode_gpus']}" if "prefill_gpus" in v else "colocated"  # noqa
    t.add_row("no reuse", sig(b["prefill_gpu_s"], 4), sig(b["decode_gpu_s"], 4), split(b),
              sig(b["requests_per_s"], 4), sig(b["output_tokens_per_s"], 4), "1.00x", "", "")
    sources = []
    for tier, v in r["reuse"].items():
        src = r["tiers"].get(tier, {})
        if src.get("source"):
            sources.append(f"  {tier} tier measured by {src['source']}" +
                           (" (CPU emulation: host memcpy)" if src.get("emulated") else ""))
        t.add_row(f"reuse from {tier} (all reusable KV)", sig(v["prefill_gpu_s"], 4), sig(b["decode_gpu_s"], 4),
                  split(v), sig(v["requests_per_s"], 4), sig(v["output_tokens_per_s"], 4), f"{v['speedup']:.2f}x",
                  "" if v["measured_gbps"] is None else fmt_rate(v["measured_gbps"]),
                  "" if v["break_even_gbps"] is None else fmt_rate(v["break_even_gbps"]))
    for routing, v in r["simulated"].items():
        t.add_row(f"simulated, {routing} (hit {v['hit_rate']:.1%})", sig(v["prefill_gpu_s"], 4),
                  sig(b["decode_gpu_s"], 4), split(v), "", "", f"{v['speedup']:.2f}x", "", "")
    con.print(t)
    for line in sources:
        con.print(plain(line))
    v = r["verdict"]
    con.print(f"Amdahl bound {b['amdahl_bound']:.2f}x (prefill share {b['prefill_share']:.0%}); decode batch "
              f"{r['fleet']['decode_batch']} (limited by {r['fleet']['decode_batch_limited_by']}), "
              f"{r['fleet']['gpus_per_instance']} device(s) per instance.")
    lc = r["load_cost"]
    if lc["used"] == "measured_exposed":
        con.print(f"KV load cost: measured layer-wise exposure ({lc['detail']}; loads {lc['copy_slowdown']:.0%} slower "
                  f"and prefill {lc['compute_slowdown']:.0%} slower while both run).")
    else:
        con.print(f"KV load cost: bandwidth estimate ({lc['detail']}).")
    cap = r.get("capacity") or {}
    if cap.get("tiers"):
        ct = Table(title=f"capacity per GPU ({'exact' if cap['exact'] else 'sampled'}, {cap['routing']} routing; "
                         f"knee: each doubling beyond adds < {r['fleet']['knee_gain']:.0%})")
        for col in ("tier", "capacity per GPU", "hit rate", "speedup"):
            ct.add_column(col, justify="left" if col == "tier" else "right")
        for tier, t in cap["tiers"].items():
            unit = cap["per_gpu_unit"][tier]
            for i, p in enumerate(t["points"]):
                knee = t["knee"].get("per_gpu")
                mark = " (knee)" if knee is not None and abs(p["per_gpu"] - knee) < 1e-9 else ""
                ct.add_row(tier if i == 0 else "", f"{sig(p['per_gpu'])} {unit}{mark}", f"{p['hit_rate']:.1%}",
                           f"{p['speedup']:.2f}x")
        con.print(ct)
    print_handoff(con, r)
    print_goodput(con, r)
    print_sparse(con, r)
    pers = r.get("persistence") or {}
    if pers.get("hits"):
        
        con.print("How long KV must persist (time since a hit block was last used): " + ", ".join(
            f"{s:.0%} of hits within {seconds(60 * m)}" for s, m in zip(pers["shares"], pers["minutes"])))
    from bench.model.prose import details, short

    con.print("[bold]Verdict, in detail:[/bold]")
    for line in details(r, with_caveats=False):
        con.print(plain(f"  {line}"))
    if v["reasons"]:
        con.print(f"[bold]Caveats ({len(v['reasons'])}):[/bold]")
        for line in v["reasons"]:
            con.print(plain(f"  - {line}"))
    for w in r["warnings"]:
        con.print(f"[yellow]warning:[/yellow] {esc(w)}")
    con.print(f"wrote {out}/model.json" + (" and plots" if r.get("plots") else " (plots=false: no plots)"))
    con.print(f"[bold]{esc(short(r))}[/bold]")  # the answer, last: where a terminal leaves the eye



def print_handoff(con, r: dict) -> None:
    """The disaggregated handoff per configuration: the part of TTFT it takes, the link's load, the splits allowed."""
    from rich.table import Table

    from bench.core.units import bytes_decimal, percent, rate as fmt_rate
    from bench.model.handoff import ranges_text
    from bench.report.console import plain

    h = r.get("handoff")
    if not h:
        return
    mv, cost = h["moved"], h["cost"]
    t = Table(title=f"handoff prefill -> decode (fleet.handoff={h['mode']}{', layer by layer' if h['layerwise'] else ''}"
                    f"; {'measured' if cost['measured'] else 'ESTIMATE'}): {bytes_decimal(mv['bytes_mean'])} per request "
                    f"({mv['share_of_input']:.0%} of its input), {seconds(h['request_s']['mean'])} in one list; link "
                    f"{fmt_rate(h['link_capacity_gbps'])} per GPU" + ("" if h["applies"] else
                                                                      " (colocated fleet: for the comparison only)"))
    for col in ("configuration", "exposed mean", "exposed p90", "hidden", "share of TTFT", "split P:D", "req/s",
                "link per GPU", "link use", "splits the link allows"):
        t.add_column(col, justify="left" if col in ("configuration", "splits the link allows") else "right")
    for c in h["configs"].values():
        t.add_row(c["label"], seconds(c["exposed_s_mean"]), seconds(c["exposed_s_p90"]), percent(c['hidden_fraction']),
                  percent(c['ttft_share']), f"{c['prefill_gpus']}:{c['decode_gpus']}", sig(c["requests_per_s"], 4),
                  fmt_rate(c["link_gbps_per_gpu"]), percent(c['link_utilization']) + (" (bound)" if c["link_bound"]
                                                                                       else ""),
                  f"P in {ranges_text(c['splits']['allowed_prefill_gpus'])} of {r['fleet']['gpus']}")
    con.print(t)
    con.print(plain(f"  handoff cost: {cost['source']}"))
    for c in h["configs"].values():
        if c["refused"]:
            con.print(plain(f"  {c['label']}: {c['refused']}"))
    v = r["verdict"].get("disaggregation") or {}
    if v:
        x = v["ratio"]
        con.print(plain(f"  disaggregated / colocated requests/s ({v['config']}): {sig(x['point'])}x "
                        f"({sig(x['low'])}-{sig(x['high'])}x); the measured costs favour {v['favours']}"))
    for p in h.get("layerwise_check") or []:
        con.print(plain(f"  layer-wise check {p['op']}/{p['memory']} {p['context_tokens']} tokens in "
                        f"{p['block_tokens']}-token blocks: exposed {seconds(p['measured_exposed_s'])} measured, "
                        f"{seconds(p['predicted_exposed_s'])} predicted"))


def print_sparse(con, r: dict) -> None:
    """The sparse-decode mode per tier and k beside dense decode (bench.model.warm)."""
    from rich.table import Table

    from bench.core.units import bytes_binary as fmt_bytes
    from bench.model.warm import fit_quality
    from bench.report.console import plain

    sd = r.get("sparse_decode") or {}
    if not sd or sd.get("skipped"):
        con.print(plain(f"Sparse decode: not evaluated ({sd.get('skipped', 'no warm-tier records')})."))
        return
    unit = "CPU" if r["device"] == "cpu" else "GPU"
    d = sd["dense"]
    t = Table(title=f"sparse decode: top-k rows per layer from the warm tier ({sd['row_bytes']} B rows, "
                    f"{sd['repeat_fraction']:.0%} kept between steps, {sd['local_tokens']} local tokens, fetch "
                    f"{'overlapped' if sd['overlap'] else 'exposed'}; context {sd['context_tokens']:.0f} tokens)")
    for col in ("tier", "k", "method", "batch (limit)", "step", "fetch", f"tokens/s per {unit}", "vs dense",
                f"context per {unit}", f"HBM freed per {unit}", f"warm tier per {unit}", "with selection"):
        t.add_column(col, justify="left" if col in ("tier", "method", "batch (limit)") else "right")
    t.add_row("dense (HBM)", "", "", str(d["batch"]), seconds(d['step_s']), "",
              f"{sig(d['tokens_per_s_per_gpu'], 4)}", "1.00x", f"{sig(d['context_tokens_per_gpu'] / 1e6)}M", "", "", "")
    for x in sd["rows"]:
        if "step_s" not in x:
            t.add_row(x["tier"], str(x["k"]), "", plain(x["skipped"]), *[""] * 8)
            continue
        sel = x.get("tokens_per_s_per_gpu_with_selection")
        t.add_row(x["tier"], str(x["k"]), x["method"], plain(f"{x['batch']} ({x['batch_limit']})"),
                  seconds(x['step_s']), seconds(x['fetch_s']), f"{sig(x['tokens_per_s_per_gpu'], 4)}",
                  f"{x['speedup_vs_dense']:.2f}x", f"{sig(x['context_tokens_per_gpu'] / 1e6)}M",
                  fmt_bytes(x["hbm_freed_bytes_per_gpu"]), fmt_bytes(x["warm_bytes_per_gpu"]),
                  "" if sel is None else f"{sig(sel, 4)}")
    con.print(t)
    for tier, fits in sd["fits"].items():
        for m, f in fits.items():
            con.print(plain(f"  warm fit {tier}/{m}: t = {sig(f['t0_s'] * 1e6)} us + bytes / {sig(f['gbps'])} GB/s "
                            f"({fit_quality(f)}{'; ' + f['note'] if f['note'] else ''})"))
    for n in sd.get("notes") or []:
        con.print(plain(f"  note: {n}"))


def print_goodput(con, r: dict) -> None:
    """Goodput per configuration at the SLO (bench.model.goodput), and the verdict's configuration in the other mode
    (disaggregated against colocated)."""
    from rich.table import Table

    from bench.core.units import percent
    from bench.model.slo import CONFIG_NAMES as CONFIG_LABEL
    from bench.report.console import plain

    gp = r.get("goodput") or {}
    t = gp.get("targets") or {}
    if gp.get("skipped") or not gp.get("configs"):
        con.print(f"Goodput at an SLO: not evaluated ({gp.get('skipped', 'no targets')}).")
        return
    ms = lambda s: "" if s is None else seconds(s)  # noqa: E731
    target = " and ".join(x for x in (t["ttft_ms"] and f"TTFT <= {ms(t['ttft_ms'] / 1e3)}",
                                      t["tpot_ms"] and f"TPOT <= {ms(t['tpot_ms'] / 1e3)}") if x)
    unit = "device" if r["device"] == "cpu" else "GPU"
    gt = Table(title=f"goodput at the SLO: {target} for {t['attainment']:.0%} of requests ({gp['mode']}, decode batch "
                     f"{gp['decode_batch']} limited by {gp['decode_batch_limited_by']}; {gp['requests_replayed']} "
                     f"requests per rate, {gp['arrivals']})")
    for col in ("configuration", "split P:D", "capacity req/s", "goodput req/s", f"per {unit}", "speedup",
                "TTFT p90", "handoff in TTFT", "TPOT p90", "miss TTFT", "miss TPOT"):
        gt.add_column(col, justify="left" if col == "configuration" else "right")
    for c in gp["configs"].values():
        split = "colocated" if gp["mode"] == "colocated" else (
            f"{c['prefill_instances']}:{c['decode_instances']}" if c["prefill_instances"] is not None else "")
        pct = lambda x: "" if x is None else f"{x:.0%}"  # noqa: E731
        sp = c["speedup"]
        gt.add_row(c["label"], split, f"{sig(c['capacity_rps'], 4)}", f"{sig(c['goodput_rps'], 4)}",
                   f"{sig(c['goodput_per_gpu'])}", "" if sp != sp else ("inf" if sp == float("inf") else f"{sp:.2f}x"),
                   ms(c["ttft_p90_s"]), percent(c.get("handoff_ttft_share")), ms(c["tpot_p90_s"]), pct(c["ttft_miss"]),
                   pct(c["tpot_miss"]))
    con.print(gt)
    md = gp.get("modes")
    if md:
        ratio = md["ratio"]
        con.print(plain(f"  {CONFIG_LABEL.get(md['config'], md['config'])} at the SLO: disaggregated "
                        f"{sig(md['disaggregated']['goodput_rps'], 4)} req/s, colocated "
                        f"{sig(md['colocated']['goodput_rps'], 4)} req/s ("
                        + ("n/a" if ratio != ratio else "inf" if ratio == float("inf") else f"{sig(ratio)}x") + ")"))
    for c in gp["configs"].values():
        if c["reason"]:
            con.print(f"  {c['label']}: no goodput: {c['reason']}")
    con.print(f"  targets from {t['ttft_ms_from'] if t['ttft_ms'] else t['tpot_ms_from']}")
