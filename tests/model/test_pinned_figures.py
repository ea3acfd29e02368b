"""Behaviour kept across a change of structure: the throughput model's figures for the recorded fixture runs (verdict
point and interval, hit rates, capacity knees, seed case, goodput) are pinned in tests/data/pinned_model.json and
must come out identical (scripts/pin.py computes them, says what moved, and re-pins with --write)."""
from __future__ import annotations

import json
import sys

import pytest

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import pin  # noqa: E402


@pytest.mark.parametrize("case", sorted(pin.MODEL_CASES))
def test_model_figures_of_the_fixture_runs_are_unchanged(case):
    pinned = json.loads(pin.PINNED_MODEL.read_text())[case]
    assert pin.moved(pin.model_figures(case), pinned) == [], case


def test_a_moved_figure_is_named_with_its_path():
    assert pin.moved({"a": {"b": 1.0, "c": "x"}}, {"a": {"b": 1.1, "c": "x"}}) == ["/a/b: pinned 1.1, now 1.0"]
    assert pin.moved({"a": [1.0]}, {"a": [1.0, 2.0]}) == ["/a: 2 items pinned, 1 now"]
    assert pin.moved({"a": 1.0 + 1e-12}, {"a": 1.0}) == []
