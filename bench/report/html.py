"""`python -m bench report RUN [RUN ...]`: one self-contained HTML page (plots embedded) and a markdown file with
the plots beside it: bandwidth vs size, paged methods vs block size, storage vs queue depth, prefill vs decode on
the roofline, speedup vs hit rate with the Amdahl bound, each under the hardware fingerprint of its runs."""
from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

from bench.core.family import families
from bench.report.compare import FINGERPRINT_KEYS, identity_mismatches
from bench.core.store import (RECORDS, check_numbers, load, read_manifest, read_records,
                         run_dirs, run_state)

def plots() -> list:
    """[(name, title, draw)] of every registered family's plots, in the families' order (bench.core.family)."""
    return [(p.name, p.title, p.function(f.package)) for f in families() for p in f.plots]


def model_results(dirs) -> list[dict]:
    """model.json files written by `bench model` for these runs."""
    out = []
    for d in dirs:
        for p in sorted(Path(d).glob("model-*/model.json")):
            out.append(json.loads(p.read_text()))
    return out


def build(paths, out_dir, allow_mismatch: bool = False) -> dict:
    dirs = run_dirs(paths)
    mismatches = identity_mismatches([(str(d), read_manifest(d)) for d in dirs], allow_mismatch, "report")
    n_records = []
    for d in dirs:
        recs = read_records(d / RECORDS)
        check_numbers(recs, f"report {d}")
        n_records.append(len(recs))
    df = load(*dirs)
    impossible = df[df["implausible"].notna()] if not df.empty else df
    df = df[df["implausible"].isna()] if not df.empty else df  # an impossible figure is never drawn
    out = Path(out_dir)
    img = out / "img"
    made = []
    for name, title, fn in plots():
        path = fn(df, img / f"{name}.png")
        if path:
            made.append((name, title, path))
    n_family = len(made)  # the verdict's own pictures go first: the answer, then the measurements behind it
    from bench.report import model_plots as mplots

    for i, r in enumerate(model_results(dirs)):  # one picture per run and variant: runs never share a file
        wl = r["workload"]["name"]
        run = Path(r["run"]).name
        name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{run}_{r.get('variant', wl)}")
        what = f"{run}: {r['model']} on {r.get('gpu', '?')}, {r['workload'].get('label', wl)}"
        made.append((f"speedup_{i}", f"Speedup vs hit rate with the Amdahl bound ({what})",
                     mplots.speedup_vs_hit_rate(r, img / f"speedup_vs_hit_rate_{name}.png")))
        for key, title, fn in (("capacity", "Capacity curves: hit rate and throughput vs tier size", mplots.capacity),
                               ("persistence", "How long KV must persist", mplots.persistence),
                               ("goodput", "Goodput at the SLO: attainment vs rate", mplots.goodput),
                               ("disaggregation", "Colocated vs disaggregated, and the handoff's share of TTFT",
                                mplots.disaggregation)):
            pic = fn(r, img / f"{key}_{name}.png")
            if pic:
                made.append((f"{key}_{i}", f"{title} ({what})", pic))
        if r.get("trace"):  # the model replayed real sessions: their pictures (bench workload draws the same)
            from bench.report import workload_plots as wplots

            for key, fn in wplots.PLOTS:
                pic = fn(r["trace"], img / f"trace_{key}_{name}.png")
                if pic:
                    made.append((f"trace_{key}_{i}", f"The trace's sessions: {key.replace('_', ' ')} ({what})", pic))
    made = made[n_family:] + made[:n_family]
    mans = [read_manifest(d) for d in dirs]
    fp = [(k, ["-" if v is None else str(v) for v in vals]) for k, vals in
          ((k, [f(m) for m in mans]) for k, f in FINGERPRINT_KEYS.items()) if any(v is not None for v in vals)]
    counts = df.groupby("status").size().to_dict() if not df.empty else {}
    answers = [answer_of(r) for r in model_results(dirs)]
    have = {str(Path(r["run"]).resolve()) for r in model_results(dirs)}
    advice = [advice_for(d, m) for d, m in zip(dirs, mans) if str(Path(d).resolve()) not in have]
    missing = [title for name, title, _ in plots() if name not in {m[0] for m in made}]
    incomplete = [f"incomplete run: {Path(d).name} is {run_state(m, n)}: its points are what its records hold"
                  for d, m, n in zip(dirs, mans, n_records) if run_state(m, n)]
    incomplete += [f"different configurations, reported together (--allow-mismatch): {m}" for m in mismatches]
    incomplete += [f"{r['benchmark']} in {Path(r['run_dir']).name} left out of every plot: {r['implausible']}"
                   for _, r in impossible.iterrows()]
    page = Page(dirs, _fp_rows(dirs, fp), made, counts, answers, advice, missing, incomplete)
    write_html(out / "report.html", page)
    write_md(out / "report.md", page)
    return {"html": str(out / "report.html"), "markdown": str(out / "report.md"),
            "images": [p for _, _, p in made], "missing": missing, "incomplete": incomplete}


@dataclass(frozen=True)
class Answer:
    """One run's verdict as the report shows it: the answer first (outcome, number with its interval, the one
    reason), then its details and caveats."""

    title: str  # run: model / workload on gpu
    outcome: str  # SUPPORTED, NOT SUPPORTED, UNDETERMINED (+ CPU rehearsal)
    number: str  # 14.18x
    interval: str  # (11.94-16.07x, 90% interval) vs the 2x claim
    why: str  # the one reason for the outcome
    details: tuple  # the verdict's sentences after the headline
    caveats: tuple
    warnings: tuple


def answer_of(r: dict) -> Answer:
    from bench.model.prose import details

    v = r["verdict"]
    s = v["speedup"]
    outcome = v["outcome"].replace("_", " ").upper() + (" (CPU rehearsal, not a hardware verdict)"
                                                         if r.get("device") == "cpu" else "")
    what_if = f" at the what-if hit rate {v['what_if_hit_rate']:.0%}" if v.get("what_if_hit_rate") is not None \
        else ""
    return Answer(f"{Path(r['run']).name}: {r['model']} / {r['workload'].get('label', r['workload']['name'])} on "
                  f"{r.get('gpu', '?')}{what_if}", outcome, f"{s['point']:.2f}x",
                  f"({s['low']:.2f}-{s['high']:.2f}x, {v['interval']:.0%} interval) vs the {v['claim']:g}x claim",
                  v.get("why") or "", tuple(details(r, with_caveats=False)), tuple(v.get("reasons") or ()),
                  tuple(r.get("warnings") or ()))


def advice_for(run_dir: Path, manifest: dict) -> str:
    """What a run without a verdict needs, as a command that works when followed: `bench model` on this run when
    it holds what the model needs, else what it lacks and the run that would supply it."""
    from bench.model.inputs import missing_inputs

    df = load(run_dir)
    cfg = manifest.get("config") or {}
    model = (cfg.get("model") or {}).get("name", "tiny")
    lacking = missing_inputs(df, model, manifest.get("device") or "cpu")
    if not lacking:
        return f"{Path(run_dir).name}: no verdict yet: python -m bench model {run_dir}"
    return (f"{Path(run_dir).name}: no verdict possible from this run ({run_state(manifest, len(df)) or 'complete'})"
            f": it lacks {'; '.join(lacking)}")


@dataclass(frozen=True)
class Page:
    """What the report shows, in its order: the answers (or what a run lacks for one), warnings, plots, the
    verdicts' details and caveats, then the tables."""

    dirs: list
    fingerprint: list  # rows: ["", run names...], [key, values...]
    made: list  # [(name, title, png path)]
    counts: dict  # status -> points
    answers: list  # [Answer]
    advice: list  # one line per run without a verdict
    missing: list  # plot titles with no data
    incomplete: list  # warnings about the runs


def _fp_rows(dirs, fp):
    return [["", *[Path(d).name for d in dirs]]] + [[k, *v] for k, v in fp]


CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;
font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}figure{margin:1.5em 0}
img{max-width:100%;border:1px solid #eee}figcaption{font-weight:bold;margin-bottom:.4em}
.warn{background:#fff3cd;border:1px solid #e0b800;padding:.5em}
.answer{border:2px solid #333;border-radius:6px;padding:.8em 1.2em;margin:1em 0}
.answer .what{color:#555}.answer .outcome{font-size:1.6em;font-weight:bold;margin:.2em 0}
.answer .number{font-size:2.6em;font-weight:bold}.answer .interval{font-size:1.2em;color:#333}
.answer .why{font-size:1.15em;margin-top:.4em}.SUPPORTED{color:#1a7f37}.NOT{color:#b42318}.UNDETERMINED{color:#9a6700}"""


def _counts(counts: dict) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none"


def write_html(path, page: Page) -> None:
    esc = html.escape
    rows = page.fingerprint
    table = "<table>" + "".join(
        "<tr>" + "".join(f"<{'th' if i == 0 or j == 0 else 'td'}>{esc(str(c))}</{'th' if i == 0 or j == 0 else 'td'}>"
                         for j, c in enumerate(r)) + "</tr>" for i, r in enumerate(rows)) + "</table>"
    figs = []
    for name, title, p in page.made:
        data = base64.b64encode(Path(p).read_bytes()).decode()
        figs.append(f'<figure id="{esc(name)}"><figcaption>{esc(title)}</figcaption>'
                    f'<img alt="{esc(title)}" src="data:image/png;base64,{data}"></figure>')
    answers = "".join(
        f'<div class="answer"><div class="what">{esc(a.title)}</div>'
        f'<div class="outcome {esc(a.outcome.split()[0])}">{esc(a.outcome)}</div>'
        f'<div><span class="number">{esc(a.number)}</span> <span class="interval">{esc(a.interval)}</span></div>'
        f'<div class="why">{esc(a.why[0].upper() + a.why[1:]) if a.why else ""}</div></div>' for a in page.answers)
    answers += "".join(f'<p class="warn">{esc(x)}</p>' for x in page.advice)
    details = "".join(
        f"<h3>{esc(a.title)}</h3>" + "".join(f"<p>{esc(d)}</p>" for d in a.details)
        + (f"<p><b>Caveats ({len(a.caveats)}):</b></p><ul>{''.join(f'<li>{esc(x)}</li>' for x in a.caveats)}</ul>"
           if a.caveats else "")
        + (f"<p><b>Warnings:</b></p><ul>{''.join(f'<li>{esc(x)}</li>' for x in a.warnings)}</ul>"
           if a.warnings else "") for a in page.answers)
    miss = "".join(f"<li>{esc(t)}: no data in these runs</li>" for t in page.missing)
    text = f"""<!doctype html><html><head><meta charset="utf-8"><title>tierbench report</title>
<style>{CSS}</style></head><body>
<h1>tierbench report</h1>{answers}{''.join(f'<p class="warn">Warning: {esc(x)}</p>' for x in page.incomplete)}
<h2>Plots</h2>{''.join(figs)}
{f'<h2>Verdict in detail</h2>{details}' if details else ''}
<h2>Runs</h2><p>{esc(', '.join(str(d) for d in page.dirs))}: points {esc(_counts(page.counts))}.</p>
<h2>Hardware fingerprint</h2>{table}
{f'<h2>Not shown</h2><ul>{miss}</ul>' if miss else ''}</body></html>"""
    Path(path).write_text(text)


def write_md(path, page: Page) -> None:
    lines = ["# tierbench report", ""]
    for a in page.answers:
        lines += [f"## {a.outcome}: **{a.number}** {a.interval}", "", f"{a.title}: {a.why}.", ""]
    lines += [f"> {x}" for x in page.advice] + [f"> **Warning:** {x}" for x in page.incomplete] + ["", "## Plots", ""]
    for _, title, p in page.made:
        lines += [f"### {title}", "", f"![{title}]({Path(p).relative_to(Path(path).parent)})", ""]
    if page.answers:
        lines += ["## Verdict in detail", ""]
    for a in page.answers:
        lines += [f"### {a.title}", ""] + [*a.details, ""] + [f"- caveat: {x}" for x in a.caveats] + \
            [f"- warning: {x}" for x in a.warnings] + [""]
    rows = page.fingerprint
    lines += ["## Runs", "", f"{', '.join(str(d) for d in page.dirs)}: points {_counts(page.counts)}.", "",
              "## Hardware fingerprint", "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])] + \
        ["| " + " | ".join(r) + " |" for r in rows[1:]] + [""]
    lines += [f"- not shown: {t} (no data)" for t in page.missing]
    Path(path).write_text("\n".join(lines) + "\n")
