"""`python -m bench compare BASE OTHER [...]`: the same points across runs (hardware generations, versions); the
comparison itself is bench.report.compare."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from bench.core.errors import UserError
from bench.core.store import check_writable_file
from bench.report.compare import CONTENDED, compare, nothing_compared, print_compare


def cmd_compare(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench compare", description="compare runs point by point (noise-aware; hardware shown side by side)")
    p.add_argument("runs", nargs="+", help="run directories; the first is the baseline")
    p.add_argument("--threshold", type=float, default=5.0, help="percent slower that counts as a regression (5)")
    p.add_argument("--noise-floor", type=float, default=2.0, help="smallest noise band in percent (2)")
    p.add_argument("--allow-mismatch", action="store_true", help="compare runs of different model/dtype anyway")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 1 when a regression is found (CI)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="let --fail-on-regression gate on interrupted, failed or unfinished runs")
    p.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    p.add_argument("--contended", choices=CONTENDED, default="exclude",
                   help="points timed under contention: exclude them (default), or widen: compare them with a band "
                        "widened by the contention they were timed under (labelled *)")
    p.add_argument("--all", action="store_true", help="list every point and fingerprint row, SAME ones too")
    a = p.parse_args(argv)
    for flag, v, ok in (("--threshold", a.threshold, a.threshold > 0), ("--noise-floor", a.noise_floor,
                                                                         a.noise_floor >= 0)):
        if not (math.isfinite(v) and ok):
            raise UserError(f"{flag}={v:g} is not allowed: a percentage, finite, "
                            f"{'> 0' if flag == '--threshold' else '>= 0'}")
    if a.json:
        check_writable_file(a.json, "--json")
    res = compare(a.runs, a.threshold / 100, a.noise_floor / 100, a.allow_mismatch, a.contended)
    print_compare(res, a.all)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2, default=str) + "\n")
    if not res["compared"]:  # a gate (or a look) that compared nothing must not pass
        print(f"error: compared nothing: {nothing_compared(res)} (exit 3)", file=sys.stderr)
        return 3
    if a.fail_on_regression and res["incomplete"] and not a.allow_incomplete:
        which = "; ".join(f"{k}: {v}" for k, v in res["incomplete"].items())
        raise UserError(f"--fail-on-regression on an incomplete run ({which}): a gate needs complete runs "
                        "(or --allow-incomplete)")
    return 1 if (a.fail_on_regression and res["regressions"]) else 0

