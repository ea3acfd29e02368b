"""Every example a user is shown runs: the `python -m bench ...` lines of README.md's code blocks and of
`python -m bench run --help`. Placeholders become real things (results/<run-id> a copy of a recorded run,
traces/ the WEKA test traces); a command that measures is planned (`--plan`: composition, validation and the plan,
which is where an example breaks) or, for `bench validate`, run on the points it prices with short sampling."""
from __future__ import annotations

import re
import shlex
import shutil

import pytest

from bench.commands import RUN_HELP
from tests.helpers import ROOT, RUNS, run_cli

TRACES = ROOT / "tests" / "data" / "traces" / "weka"


def readme_examples() -> list[str]:
    """The `python -m bench` lines of README.md's indented code blocks, without their trailing comments."""
    out = []
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("    python -m bench "):
            out.append(line.split("#", 1)[0].strip())
    return out


def help_examples() -> list[str]:
    return [ln.strip() for ln in RUN_HELP.split("Examples:", 1)[1].splitlines() if ln.strip().startswith("python")]


EXAMPLES = [("README", c) for c in readme_examples()] + [("run --help", c) for c in help_examples()]


def test_the_examples_are_found():
    assert len(readme_examples()) >= 10 and len(help_examples()) >= 3


@pytest.mark.parametrize("where, command", EXAMPLES, ids=[f"{w}: {c[16:60]}" for w, c in EXAMPLES])
def test_every_example_runs(where, command, tmp_path):
    a, b = tmp_path / "run_a", tmp_path / "run_b"
    shutil.copytree(RUNS / "cpu_a", a)
    shutil.copytree(RUNS / "cpu_b", b)
    subst = {"results/<run-id>": str(a), "results/<run-a>": str(a), "results/<run-b>": str(b),
             "traces/": str(TRACES)}
    text = command
    for k, v in subst.items():
        text = text.replace(k, v)
    assert "<" not in text, f"an unknown placeholder in {command!r}"
    args = shlex.split(text)[3:]  # after `python -m bench`
    if args[0] == "run" and "--plan" not in args:
        args.insert(1, "--plan")
    if args[0] == "validate":  # the points its prediction prices, sampled briefly (tests/llm/test_replay.py: more)
        args += ["harness.time_budget_s=0.05", "harness.warmup_s=0", f"run.root={tmp_path / 'v'}",
                 "only=[layer_prefill,layer_decode,paged_onload,file_read,e2e_agentic_replay]"]
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 0, f"{where}: {command}\n{r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr and not re.search(r"^error:", r.stderr, re.M)
