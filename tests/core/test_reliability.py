"""Bad inputs and faults: one clear line (exit 2, no traceback) naming what was typed, nothing lost or changed.

One test per class of issue 16 that was still open: corrupt numbers at the CI gate and in reports, incomplete runs
everywhere they are used, bad output locations (read-only, a file), a full results filesystem, malformed records
and traces, a refused rerun that must not touch the existing run, cpu-block values and the device checked before
any job, and the smaller ones (nearest key, NaN options, empty routings, a trace that is a directory, a run
compared with itself)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.core.store import read_records
from tests.helpers import RUNS, run_cli, run_main


def one_line_error(r, *expect):
    assert r.returncode == 2, (r.returncode, r.stdout[-1500:], r.stderr[-1500:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    for e in expect:
        assert e in lines[0], lines[0]
    return lines[0]


def tree_digest(path: Path) -> str:
    """Names and contents of every file under ``path``: equal before and after means nothing was changed."""
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def rewrite(run: Path, fn) -> None:
    recs = read_records(run / "records.jsonl")
    (run / "records.jsonl").write_text("".join(json.dumps(fn(r)) + "\n" for r in recs))


@pytest.fixture
def readonly(tmp_path):
    """A read-only directory: a read-only bind mount as root (root ignores file modes), chmod 555 otherwise."""
    d = tmp_path / "ro"
    d.mkdir()
    (d / "existing.txt").write_text("keep me\n")
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    ok = subprocess.run(["mount", "--bind", str(d), str(d)], capture_output=True).returncode == 0 and \
        subprocess.run(["mount", "-o", "remount,ro,bind", str(d)], capture_output=True).returncode == 0
    if not ok:
        subprocess.run(["umount", str(d)], capture_output=True)
        pytest.skip("cannot make a read-only directory here (root without mount privileges)")
    yield d
    subprocess.run(["umount", str(d)], capture_output=True)


# -- 2: corrupt numbers never pass a gate or reach a report ------------------------------------------------------
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-1.5", "0"])
def test_compare_gate_and_report_refuse_a_corrupt_number(runs, tmp_path, value):
    a, b = runs

    def corrupt(r):
        if r["benchmark"] == "h2d_pinned" and r["status"] == "ok" and r["params"]["size_bytes"] == 1048576:
            r["metrics"]["gbps"] = "__X__"
        return r

    rewrite(b, corrupt)
    (b / "records.jsonl").write_text((b / "records.jsonl").read_text().replace('"__X__"', value))
    before = tree_digest(b)
    gate = run_cli("compare", str(a), str(b), "--fail-on-regression")
    one_line_error(gate, "h2d_pinned size_bytes=1048576", "gbps=", "finite and > 0")
    rep = run_cli("report", str(b), "--out", str(tmp_path / "rep"))
    one_line_error(rep, "h2d_pinned size_bytes=1048576", "gbps=")
    assert tree_digest(b) == before


# -- 4: incomplete runs are said to be so everywhere ---------------------------------------------------------------
def test_incomplete_runs_are_flagged_and_the_gate_refuses_them(runs, tmp_path):
    from bench.core.store import load

    a, b = runs
    man = json.loads((b / "manifest.json").read_text())
    man["status"] = "interrupted"
    (b / "manifest.json").write_text(json.dumps(man))
    df = load(a, b)
    assert set(df["run_status"]) == {"complete", "interrupted"}
    assert df[df["run_dir"] == str(b)]["run_incomplete"].iloc[0] == "interrupted"
    cmp = run_cli("compare", str(a), str(b))
    assert cmp.returncode == 0 and "incomplete run:" in cmp.stdout and "interrupted" in cmp.stdout
    one_line_error(run_cli("compare", str(a), str(b), "--fail-on-regression"), "incomplete run",
                   "--allow-incomplete")
    assert run_cli("compare", str(a), str(b), "--fail-on-regression", "--allow-incomplete").returncode in (0, 1)
    rep = run_cli("report", str(a), str(b), "--out", str(tmp_path / "rep"))
    assert rep.returncode == 0 and "incomplete run" in rep.stdout
    assert "Warning: incomplete run" in (tmp_path / "rep" / "report.html").read_text()
    man["status"] = "running"
    (b / "manifest.json").write_text(json.dumps(man))
    assert "killed" in run_cli("compare", str(a), str(b)).stdout


# -- 6: bad output locations, checked before the work, each one line saying how to write elsewhere ----------------
def test_bad_output_locations_fail_before_the_work(runs, tmp_path, readonly):
    a, b = runs
    afile = tmp_path / "afile"
    afile.write_text("x")
    before = tree_digest(readonly)
    for args, expect in [
        (["run", "suite=quick", "model=tiny", f"run.root={readonly}"], "run.root="),
        (["run", "suite=quick", "model=tiny", f"run.root={afile}"], "is a file"),
        (["model", str(a), f"out={readonly / 'm'}"], "out="),
        (["model", str(a), f"out={afile}"], "is a file"),
        (["report", str(a), "--out", str(readonly)], "--out="),
        (["report", str(a), "--out", str(afile)], "is a file"),
        (["compare", str(a), str(b), "--json", str(readonly / "c.json")], "--json"),
        (["compare", str(a), str(b), "--json", str(tmp_path)], "is a directory"),
    ]:
        one_line_error(run_main(*args), expect)
    assert tree_digest(readonly) == before and afile.read_text() == "x"


def test_model_of_a_read_only_run_dir_is_refused_with_the_way_out_which_works(tmp_path, readonly):
    run = readonly / "run"
    subprocess.run(["umount", str(readonly)], capture_output=True) if os.geteuid() == 0 else readonly.chmod(0o755)
    shutil.copytree(RUNS / "cpu_a", run)
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", str(readonly), str(readonly)], check=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(readonly)], check=True)
    else:
        readonly.chmod(0o555)
        run.chmod(0o555)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    r = run_cli("model", str(run), "plots=false", "fleet.sessions=40", cwd=cwd)
    one_line_error(r, "not writable", "out=DIR")
    assert not list(cwd.iterdir()) and "wrote" not in r.stdout  # nothing announced, nothing in the current directory
    advice = r.stderr.split("python -m bench model ", 1)[1].split()
    assert advice == [str(run), "out=DIR"]
    r = run_cli("model", str(run), "plots=false", "fleet.sessions=40", f"out={tmp_path / 'analysis'}", cwd=cwd)
    assert r.returncode == 0 and (tmp_path / "analysis" / "model.json").exists(), r.stderr[-2000:]
    assert not list(cwd.iterdir())
    one_line_error(run_cli("report", str(run), cwd=cwd), "not writable", "--out DIR")
    one_line_error(run_cli("status"), "needs the sweep")


# -- 7: a full results filesystem ----------------------------------------------------------------------------------
def test_full_results_filesystem_ends_with_one_line_and_keeps_records(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    fs = tmp_path / "small"
    fs.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(fs)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        r = run_cli("run", "suite=quick", "model=tiny", "benchmark=transfer", f"run.root={fs}", "run.id=f",
                    "harness.progress=false", "run.analyze=false", "harness.time_budget_s=0.01")
        one_line_error(r, "No space left on device", "kept")
        run = fs / "f"
        assert not list(run.glob("*.tmp"))
        man = json.loads((run / "manifest.json").read_text())
        assert man["status"] in ("failed", "running")
        recs = read_records(run / "records.jsonl")  # whatever was written is whole
        assert all(x["status"] in ("ok", "skipped", "error") for x in recs)
    finally:
        subprocess.run(["umount", str(fs)], capture_output=True)


# -- 8: malformed records and traces --------------------------------------------------------------------------------
@pytest.mark.parametrize("junk", ["[1, 2]", "{}", '{"benchmark": 3, "status": "ok"}', "\"text\""])
def test_records_that_are_not_records_are_skipped_with_one_line(runs, tmp_path, junk):
    a, b = runs
    with open(b / "records.jsonl", "a") as f:
        f.write(junk + "\n")
    cmp = run_cli("compare", str(a), str(b))
    assert cmp.returncode == 0 and "Traceback" not in cmp.stderr
    warn = [ln for ln in cmp.stderr.splitlines() if "not a tierbench record" in ln]
    assert len(warn) == 1 and warn[0].startswith("warning: ") and "warnings.warn" not in cmp.stderr
    rep = run_cli("report", str(b), "--out", str(tmp_path / "r"))
    assert rep.returncode == 0, rep.stderr[-1500:]


@pytest.mark.parametrize("content, expect", [
    (b'{"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [1]}\n\xff\xfe junk\n',
     "line 2 is not UTF-8"),
    (b'{"timestamp": 0, "input_length": 0, "output_length": 2, "hash_ids": []}\n', "request 1 has input 0"),
    (b'{"timestamp": 0, "input_length": -4, "output_length": 2, "hash_ids": [1]}\n', "request 1 has input -4"),
    (b'{"timestamp": 0, "input_length": 4}\n', "line 1 is not a Mooncake record (missing output_length, hash_ids)"),
    (b'[1, 2]\n', "not a trace or usage log of a known format"),
])
def test_malformed_traces_are_one_line(runs, tmp_path, content, expect):
    a, _ = runs
    t = tmp_path / "t.jsonl"
    t.write_bytes(content)
    one_line_error(run_cli("model", str(a), f"trace={t}"), expect, str(t))


def test_trace_that_is_an_empty_directory(runs, tmp_path):
    a, _ = runs
    (tmp_path / "empty").mkdir()
    one_line_error(run_cli("model", str(a), f"trace={tmp_path / 'empty'}"), "a directory with no .json or .jsonl file")


# -- 10: a refused rerun leaves the existing run as it was ----------------------------------------------------------
def test_refused_rerun_does_not_touch_the_existing_run(tmp_path):
    args = ["run", "suite=quick", "model=tiny", "benchmark=ceilings", "only=gemm", f"run.root={tmp_path}",
            "run.id=same", "harness.progress=false", "run.analyze=false"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-1500:]
    before = tree_digest(tmp_path / "same")
    one_line_error(run_cli(*args, "harness.min_samples=7"), "run.id=same", "already holds a run")
    assert tree_digest(tmp_path / "same") == before


# -- 11: every value checked before any job ---------------------------------------------------------------------------
def test_cpu_block_values_are_checked_before_any_job(tmp_path):
    r = run_cli("run", "-m", "suite=quick", "model=tiny", "benchmark=interference",
                "interference.cpu.hit_tokens=[128],[0]", f"run.root={tmp_path}", "run.id=s", "harness.progress=false")
    one_line_error(r, "interference.cpu.hit_tokens=0")
    assert not (tmp_path / "s").exists()  # no job ran, nothing written


def test_cuda_without_a_gpu_writes_nothing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    one_line_error(run_cli("run", "harness.device=cuda", f"run.root={tmp_path}", "run.id=c"), "harness.device=cuda")
    assert not (tmp_path / "c").exists()


# -- 15: the smaller ones ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, expect", [
    (["run", "harness.warmup=0.1"], "did you mean harness.warmup_s?"),
    (["run", "interference.hit_token=[1]"], "did you mean interference.hit_tokens?"),
])
def test_unknown_keys_suggest_the_nearest(args, expect):
    one_line_error(run_main(*args), expect)


def test_nan_options_empty_routings_and_self_compare(runs):
    a, b = runs
    one_line_error(run_main("compare", str(a), str(b), "--noise-floor", "nan"), "--noise-floor=nan")
    one_line_error(run_main("compare", str(a), str(b), "--threshold", "inf"), "--threshold=inf")
    one_line_error(run_main("model", str(a), "fleet.routings=[]"), "fleet.routings=[]")
    one_line_error(run_cli("compare", str(a), str(a)), "with itself")
