"""`python -m bench validate [overrides]`: microbenchmarks + the end-to-end agentic replay in one run, then the
measured vs predicted table (a thin wrapper over `run benchmark=[layers,transfer,storage,validate]`)."""
from __future__ import annotations

from pathlib import Path


HELP = """usage: python -m bench validate [OVERRIDE ...]

Runs layers, transfer, storage and the e2e_agentic_replay benchmark in one run, then prints, per mode
(recompute, reuse_hbm, reuse_host, reuse_storage), the measured prefill/decode time and speedup next to what the
costs fitted from the same run predict. Overrides as for `run`, plus:
  workload=agentic_coding|...     sessions to replay (validate.workload)
  validate.sessions=2 validate.turns=6 validate.scale_tokens=0.25 validate.layers=4 validate.modes=[...]
Example (CPU): python -m bench validate suite=quick model=tiny
"""


def cmd_validate(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(HELP)
        return 0
    from bench.commands import run as runner
    from bench.commands.overrides import compose_checked, keys_of

    args = [("workload@validate.workload=" + a.split("=", 1)[1]) if a.startswith("workload=") else a for a in argv]
    if not any(a.startswith("benchmark=") for a in args):
        args.insert(0, "benchmark=[layers,transfer,storage,validate]")
    if "run.id" not in keys_of(args):  # the run's directory, resolved once here: the summary reads it after
        from bench.core.identity import run_id

        args.append(f"run.id={run_id()}")
    runner.run(args)
    cfg = compose_checked([a for a in args if not a.startswith("-")])
    run_dir = Path(str(cfg.run.root)).expanduser() / str(cfg.run.id)
    if (run_dir / "records.jsonl").exists():
        print_summary(run_dir)
    return 0


def print_summary(run_dir) -> None:
    from rich.markup import escape as esc
    from rich.table import Table

    from bench.core.store import RECORDS, load, read_records
    from bench.model.replay_check import replay_predictions
    from bench.core.units import ppm, seconds
    from bench.report.console import console, plain

    recs = [r for r in read_records(Path(run_dir) / RECORDS) if r["benchmark"] == "e2e_agentic_replay"]
    pred = replay_predictions(load(run_dir), recs)
    con = console()
    t = Table(title=f"end-to-end replay vs cost model ({run_dir})")
    for col in ("mode", "status", "prefill", "decode", "speedup measured", "speedup predicted",
                "speedup error", "time error", "logits vs recompute (rel.)"):
        t.add_column(col, justify="right")
    f = lambda m, k, fmt: fmt.format(m[k]) if m.get(k) is not None else ""  # noqa: E731
    for r in recs:
        m, p = r["metrics"], pred.get(r["params"]["mode"], {})
        t.add_row(r["params"]["mode"], plain(r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"),
                  seconds(m.get("prefill_s")), seconds(m.get("decode_s")), f(m, "speedup_measured", "{:.3f}x"),
                  f(p, "speedup_predicted", "{:.3f}x"), f(p, "speedup_prediction_error", "{:+.1%}"),
                  f(p, "time_prediction_error", "{:+.1%}"), ppm(m.get("logits_rel_error_vs_recompute")))
    con.print(t)
    for mode, p in pred.items():
        if p.get("eager_decode"):
            con.print(f"[yellow]{mode} decoded {esc(p['eager_decode'])}:[/yellow] its decode_s is Python's op "
                      "issue, which the costs do not price")
        if p.get("missing"):
            con.print(f"no prediction for {mode}: {p['missing']}")
        elif abs(p.get("speedup_prediction_error") or 0) > 0.15:
            con.print(f"[yellow]miss > 15%:[/yellow] {mode}: the replay pays costs the microbenchmarks do not time "
                      "(embedding/output head, per-step launch and Python overhead, cache writes); see the time "
                      "error column")
