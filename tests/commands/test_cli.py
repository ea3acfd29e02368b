import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.core.store import read_records
from tests.helpers import ROOT, run_cli


@pytest.mark.parametrize("args, expect", [
    (["run", "benchmark=nope"], "unknown benchmark preset 'nope'; allowed: all"),
    (["run", "suite=quick", "harness.min_samples=-3"], "harness.min_samples=-3 is not allowed: an integer >= 1"),
    (["run", "model=nope"], "unknown model preset 'nope'; allowed:"),
    (["run", "only=nope"], "unknown benchmark 'nope'; allowed:"),
    (["run", "harness.noise_target=abc"], "harness.noise_target=abc"),
    (["run", "harness.device=gpu"], "harness.device='gpu' is not allowed"),
    (["run", "-m", "harness.min_samples=3,0"], "harness.min_samples=0 is not allowed"),
    (["nope"], "unknown command 'nope'; allowed:"),
    (["run", "run.root=/tmp/x", "model=gpt5"], "unknown model preset 'gpt5'"),  # the key typed, not the first
    (["run", "run.id=.."], "run.id='..' is not allowed: one directory name"),
    (["run", "run.id=."], "run.id='.' is not allowed: one directory name"),
])
def test_bad_input_is_one_line_exit_2(args, expect, capsys):
    """The CLI's own entry point in this process (a Python exception would fail the test, not print a traceback);
    the process boundary is checked once below."""
    from bench.commands import main

    with pytest.raises(SystemExit) as ex:
        main(list(args))
    out = capsys.readouterr()
    assert ex.value.code == 2, (out.out, out.err)
    lines = [ln for ln in out.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.err
    assert expect in lines[0]


def test_bad_input_from_the_shell_is_one_line_exit_2():
    r = run_cli("run", "suite=quick", "harness.noise_target=abc")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == ["error: bad override harness.noise_target=abc: Value 'abc' of type 'str' could not be "
                     "converted to Float"], r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_help_and_list():
    r = run_cli("--help")
    assert r.returncode == 0 and "run" in r.stdout and "list" in r.stdout
    r = run_cli("run", "--help")
    assert r.returncode == 0 and "suite=quick" in r.stdout
    r = run_cli("list")
    assert r.returncode == 0
    for word in ("d2d_copy", "gemm", "llama3_70b", "quick"):
        assert word in r.stdout


def test_sigkill_mid_run_keeps_completed_records_parseable(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = [sys.executable, "-m", "bench", "run", "benchmark=ceilings", "only=d2d_copy", f"run.root={tmp_path}",
            "run.id=killed", "harness.progress=false", "harness.time_budget_s=0.3", "harness.noise_target=1e-9",
            "ceilings.copy_bytes=[65536,131072,262144,524288,1048576,2097152,4194304,8388608]"]
    p = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rec = tmp_path / "killed" / "records.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not rec.exists() or rec.read_bytes().count(b"\n") < 2):
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    recs = read_records(rec)
    assert 2 <= len(recs) < 8
    assert rec.read_bytes().endswith(b"\n")  # only whole lines
    assert all(r["status"] == "ok" for r in recs)
    m = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert m["status"] == "running" and m["finished"] is None


def test_what_the_user_typed_wins_over_the_cpu_profile(tmp_path):
    """On a CPU-only run the family's cpu: block fills only what the user left unset (and the manifest says
    which keys it filled)."""
    r = run_cli("run", "benchmark=layers", "only=layer_decode", "model=tiny", "suite=quick", "layers.decode_batch=[2]",
                f"run.root={tmp_path}", "run.id=t", "harness.progress=false", "run.analyze=false")
    assert r.returncode == 0, r.stderr[-2000:]
    recs = [json.loads(x) for x in (tmp_path / "t" / "records.jsonl").read_text().splitlines()]
    assert {rec["params"]["batch"] for rec in recs} == {2}
    m = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert "layers.decode_batch" not in m["cpu_profile_keys"] and "layers.decode_ctx" in m["cpu_profile_keys"]
    assert m["config"]["layers"]["decode_batch"] == [2]
