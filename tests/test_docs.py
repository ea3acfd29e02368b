"""The reference docs are generated from the code (python -m bench docs) and kept current: a test fails when they are
stale; the README fits a screen or two and points only at files that exist."""
import re

from tests.helpers import ROOT, run_main


def test_generated_docs_are_current():
    r = run_main("docs", "--check")
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_stale_doc_is_named(tmp_path):
    (tmp_path / "config.md").write_text("old\n")
    r = run_main("docs", "--check", "--out", str(tmp_path))
    assert r.returncode == 1 and "config.md" in r.stdout and "benchmarks.md" in r.stdout


def test_generated_config_doc_gives_every_key_a_meaning():
    text = (ROOT / "docs" / "config.md").read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| `")]
    assert len(rows) > 150
    assert [ln for ln in rows if ln.rstrip().endswith("|  |")] == []


def test_readme_fits_and_every_path_it_names_exists():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for path in set(re.findall(r"\b((?:docs|scripts|conf|results|kernels|bench|tests)/[\w./-]*\w)", text)):
        if "<" in path or re.match(r"results/\d{8}-", path):  # a placeholder, or the example's own run
            continue
        assert (ROOT / path).exists() or list(ROOT.glob(path)), path
