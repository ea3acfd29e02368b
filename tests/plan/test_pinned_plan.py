"""The planner's verdict on every point of the shipped suites on the GPU targets (status, reason, bytes, estimated
seconds) is pinned in tests/data/pinned_plan.json (scripts/pin.py; --write re-pins after a change meant to move it)."""
from __future__ import annotations

import json
import sys

import pytest

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import pin  # noqa: E402


@pytest.mark.parametrize("case", sorted(pin.PLAN_CASES))
def test_planned_points_of_the_shipped_suites_are_unchanged(case):
    pinned = json.loads(pin.PINNED_PLAN.read_text())[case]
    assert pin.moved(pin.plan_figures(case), pinned) == [], case


@pytest.mark.parametrize("case", sorted(pin.CONFIG_CASES))
def test_composed_configs_and_benchmark_order_are_unchanged(case):
    pinned = json.loads(pin.PINNED_CONFIG.read_text())[case]
    assert pin.moved(pin.config_figures(case), pinned) == [], case
