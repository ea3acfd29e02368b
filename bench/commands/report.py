"""`python -m bench report RUN [RUN ...]`: one self-contained HTML page and a markdown file with the plots beside
it (bench.report.html builds them)."""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.core.errors import UserError
from bench.core.store import check_writable_dir, run_dirs
from bench.report.html import build


def cmd_report(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench report", description="HTML + markdown report with plots and the fingerprint")
    p.add_argument("runs", nargs="+", help="run directories (or a folder of runs)")
    p.add_argument("--out", help="output directory (default: the first run's report/)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="report runs of different model presets or dtypes together (refused by default)")
    a = p.parse_args(argv)
    out = a.out or str(Path(run_dirs(a.runs)[0]) / "report")
    try:
        check_writable_dir(out, "--out")
    except UserError as e:  # the run's own directory is read-only: say how to write elsewhere
        if a.out:
            raise
        raise UserError(f"{e}; write the report elsewhere: python -m bench report {' '.join(a.runs)} --out DIR") \
            from None
    from bench.benchmarks import load_families

    load_families()  # the families' plots (bench.core.family)
    res = build(a.runs, out, a.allow_mismatch)
    print(f"wrote {res['html']} and {res['markdown']} ({len(res['images'])} plots)")
    for x in res["incomplete"]:
        print(f"warning: {x}")
    for t in res["missing"]:
        print(f"  not shown: {t} (no data in these runs)")
    return 0

