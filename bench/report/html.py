"""`python -m bench report RUN [RUN ...]`: one self-contained HTML page (plots embedded) and a markdown file with
the plots beside it: bandwidth vs size, paged methods vs block size, storage vs queue depth, prefill vs decode on
the roofline, speedup vs hit rate with the Amdahl bound, each under the hardware fingerprint of its runs."""
from __future__ import annotations

import base64
import html
import json
import re
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
    out = Path(out_dir)
    img = out / "img"
    made = []
    for name, title, fn in plots():
        path = fn(df, img / f"{name}.png")
        if path:
            made.append((name, title, path))
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
                               ("goodput", "Goodput at the SLO: attainment vs rate", mplots.goodput)):
            pic = fn(r, img / f"{key}_{name}.png")
            if pic:
                made.append((f"{key}_{i}", f"{title} ({what})", pic))
        if r.get("trace"):  # the model replayed real sessions: their pictures (bench workload draws the same)
            from bench.report import workload_plots as wplots

            for key, fn in wplots.PLOTS:
                pic = fn(r["trace"], img / f"trace_{key}_{name}.png")
                if pic:
                    made.append((f"trace_{key}_{i}", f"The trace's sessions: {key.replace('_', ' ')} ({what})", pic))
    mans = [read_manifest(d) for d in dirs]
    fp = [(k, ["-" if v is None else str(v) for v in vals]) for k, vals in
          ((k, [f(m) for m in mans]) for k, f in FINGERPRINT_KEYS.items()) if any(v is not None for v in vals)]
    counts = df.groupby("status").size().to_dict() if not df.empty else {}
    verdicts = [(f"{Path(r['run']).name}: {r['model']}", r["workload"].get("label", r["workload"]["name"]),
                 r["verdict"]["sentence"] if isinstance(r["verdict"], dict) else r["verdict"],
                 (r["verdict"].get("reasons") if isinstance(r["verdict"], dict) else None) or [],
                 r.get("warnings") or [], r.get("gpu", ""))
                for r in model_results(dirs)]
    missing = [title for name, title, _ in plots() if name not in {m[0] for m in made}]
    incomplete = [f"incomplete run: {Path(d).name} is {run_state(m, n)}: its points are what its records hold"
                  for d, m, n in zip(dirs, mans, n_records) if run_state(m, n)]
    incomplete += [f"different configurations, reported together (--allow-mismatch): {m}" for m in mismatches]
    write_html(out / "report.html", dirs, fp, made, counts, verdicts, missing, incomplete)
    write_md(out / "report.md", dirs, fp, made, counts, verdicts, missing, incomplete)
    return {"html": str(out / "report.html"), "markdown": str(out / "report.md"),
            "images": [p for _, _, p in made], "missing": missing, "incomplete": incomplete}


def _fp_rows(dirs, fp):
    return [["", *[Path(d).name for d in dirs]]] + [[k, *v] for k, v in fp]


def write_html(path, dirs, fp, made, counts, verdicts, missing, incomplete=()) -> None:
    esc = html.escape
    rows = _fp_rows(dirs, fp)
    table = "<table>" + "".join(
        "<tr>" + "".join(f"<{'th' if i == 0 or j == 0 else 'td'}>{esc(str(c))}</{'th' if i == 0 or j == 0 else 'td'}>"
                         for j, c in enumerate(r)) + "</tr>" for i, r in enumerate(rows)) + "</table>"
    figs = []
    for name, title, p in made:
        data = base64.b64encode(Path(p).read_bytes()).decode()
        figs.append(f'<figure id="{esc(name)}"><figcaption>{esc(title)}</figcaption>'
                    f'<img alt="{esc(title)}" src="data:image/png;base64,{data}"></figure>')
    verdict_html = "".join(
        f"<p><b>{esc(m)} / {esc(w)} on {esc(str(g))}:</b> {esc(v)}</p>"
        + (f"<p>Caveats:</p><ul>{''.join(f'<li>{esc(x)}</li>' for x in rs)}</ul>" if rs else "")
        + (f"<p>Warnings:</p><ul>{''.join(f'<li>{esc(x)}</li>' for x in ws)}</ul>" if ws else "")
        for m, w, v, rs, ws, g in verdicts) or \
        "<p>No throughput-model result yet: run <code>python -m bench model RUN</code> to add the verdict.</p>"
    miss = "".join(f"<li>{esc(t)}: no data in these runs</li>" for t in missing)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>tierbench report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse;
font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}figure{{margin:1.5em 0}}
img{{max-width:100%;border:1px solid #eee}}figcaption{{font-weight:bold;margin-bottom:.4em}}
.warn{{background:#fff3cd;border:1px solid #e0b800;padding:.5em}}</style></head><body>
<h1>tierbench report</h1>{''.join(f'<p class="warn">Warning: {esc(x)}</p>' for x in incomplete)}
<p>Runs: {esc(', '.join(str(d) for d in dirs))}. Points: {esc(json.dumps(counts))}.</p>
<h2>Hardware fingerprint</h2>{table}<h2>Verdict</h2>{verdict_html}<h2>Plots</h2>{''.join(figs)}
{f'<h2>Not shown</h2><ul>{miss}</ul>' if miss else ''}</body></html>"""
    Path(path).write_text(page)


def write_md(path, dirs, fp, made, counts, verdicts, missing, incomplete=()) -> None:
    rows = _fp_rows(dirs, fp)
    lines = ["# tierbench report", ""] + [f"> **Warning:** {x}" for x in incomplete] + \
        ["", f"Runs: {', '.join(str(d) for d in dirs)}. Points: {json.dumps(counts)}.", "",
             "## Hardware fingerprint", "", "| " + " | ".join(rows[0]) + " |",
             "|" + "---|" * len(rows[0])] + ["| " + " | ".join(r) + " |" for r in rows[1:]]
    body = []
    for m, w, v, rs, ws, g in verdicts:
        body += [f"**{m} / {w} on {g}:** {v}", ""] + [f"- caveat: {x}" for x in rs] + \
            [f"- warning: {x}" for x in ws] + [""]
    lines += ["", "## Verdict", ""] + (body or ["No throughput-model result yet: run `python -m bench model RUN`."])
    lines += ["", "## Plots", ""]
    for _, title, p in made:
        lines += [f"### {title}", "", f"![{title}]({Path(p).relative_to(Path(path).parent)})", ""]
    lines += [f"- not shown: {t} (no data)" for t in missing]
    Path(path).write_text("\n".join(lines) + "\n")
