"""`python -m bench list`: benchmarks from the registry and presets from conf/ with one-line descriptions."""
from __future__ import annotations

import yaml
from rich.table import Table

from bench.benchmarks import catalog
from bench.report.console import console as make_console, plain

PRESET_GROUPS = ("suite", "model", "workload", "hardware", "fleet")


def preset_description(path) -> str:
    data = yaml.safe_load(path.read_text()) or {}
    if path.parent.name in data and isinstance(data[path.parent.name], dict):  # '# @package _global_' presets
        data = data[path.parent.name]
    desc = data.get("description") or data.get("name") or ""
    return " ".join(str(desc).split())


def presets(group: str) -> dict[str, str]:
    from bench import conf_dir

    d = conf_dir() / group
    return {p.stem: preset_description(p) for p in sorted(d.glob("*.yaml"))} if d.is_dir() else {}


def print_listing(what: str = "all") -> None:
    console = make_console()
    if what in ("all", "benchmarks"):
        t = Table(title="benchmarks (a family: benchmark=FAMILY; one benchmark: only=NAME)")
        for col in ("name", "family", "what it measures"):
            t.add_column(col, overflow="fold")
        for b in sorted(catalog(), key=lambda b: (b["family"], b["name"])):
            t.add_row(b["name"], b["family"], plain(b["description"]))
        console.print(t)
    if what in ("all", "presets"):
        for group in PRESET_GROUPS:
            items = presets(group)
            if not items:
                continue
            t = Table(title=f"{group} presets ({group}=NAME)")
            t.add_column("name")
            t.add_column("description", overflow="fold")
            for name, desc in items.items():
                t.add_row(name, plain(desc))
            console.print(t)
