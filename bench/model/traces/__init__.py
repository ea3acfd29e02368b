"""Readers of real agent traces and usage logs, each an adapter into one request table (bench.model.traces.table),
checked once. Formats are detected from the content (``fmt=`` forces one); a path is a file or a directory of them
(searched recursively for .json and .jsonl files).

    weka         WEKA's Claude Code traces (kv-cache-tester: one JSON object per conversation, 64-token blocks)
    claude_code  Claude Code's own session logs (usage per response, each message.id once; sub-agent files)
    codex        Codex CLI session logs (token_count events)
    openai       OpenAI-style usage JSONL (prompt_tokens, cached_tokens)
    qwen         Alibaba's Qwen/Bailian traces (chat_id / parent_chat_id, 16-token blocks)
    mooncake     Mooncake traces (timestamp, input_length, output_length, hash_ids)

A new format is one module here (a ``detect(first object)`` and a ``read(paths, loads) -> RequestTable``) and one
line in :data:`FORMATS`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from bench.core.errors import UserError, allowed
from bench.model.traces import jsonl, usage, weka
from bench.model.traces.table import RequestTable, check, to_trace  # noqa: F401  (the table and its simulator form)

# name -> (detect(first object of a file), read(paths, loads), what a file holds)
FORMATS: dict[str, tuple[Callable, Callable, str]] = {
    "weka": (weka.detect, weka.read, "one JSON object per conversation"),
    "claude_code": (usage.detect_claude, usage.read_claude, "JSON lines"),
    "codex": (usage.detect_codex, usage.read_codex, "JSON lines"),
    "openai": (usage.detect_openai, usage.read_openai, "JSON lines"),
    "qwen": (jsonl.detect_qwen, jsonl.read_qwen, "JSON lines"),
    "mooncake": (jsonl.detect_mooncake, jsonl.read_mooncake, "JSON lines"),
}
SUFFIXES = (".json", ".jsonl")


def json_loads() -> Callable:
    """orjson's parser where installed (several times the standard library's speed on big traces), else json's;
    what orjson refuses (an integer beyond 64 bits) goes to json's, so the checks can name it."""
    import json

    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is a dependency; json reads the same files, slower
        return json.loads

    def loads(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return json.loads(raw)
    return loads


def files_of(paths) -> list[Path]:
    """The trace files ``paths`` name: files as given, directories searched recursively for .json/.jsonl files."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in SUFFIXES
                           and not f.name.endswith(".meta.json"))  # Claude Code's sub-agent descriptions
            if not found:
                raise UserError(f"{raw}: a directory with no .json or .jsonl file in it")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(f"{raw}: no such file or directory")
    if not out:
        raise UserError("no trace file given")
    return out


def first_object(path: Path, loads):
    """The first JSON object of a file (its first non-empty line, or the whole file when that is not JSON alone)."""
    with open(path, "rb") as f:
        for raw in f:
            if raw.strip():
                try:
                    return loads(raw)
                except Exception:
                    break
    try:
        return loads(path.read_bytes())
    except Exception as e:
        raise UserError(f"{path}: not a trace or usage log of a known format ({', '.join(FORMATS)}): not JSON or "
                        f"JSON lines ({type(e).__name__}: {str(e).splitlines()[0][:100]})") from None


def detect(path: Path, loads) -> Optional[str]:
    obj = first_object(path, loads)
    return next((name for name, (test, _, _) in FORMATS.items() if test(obj)), None)


def read_requests(paths, fmt: Optional[str] = None) -> RequestTable:
    """One checked request table of the trace or log files ``paths`` name, in one format (detected, or ``fmt``)."""
    if fmt is not None and fmt not in FORMATS:
        raise allowed("format", fmt, list(FORMATS))
    loads = json_loads()
    files = files_of(paths)
    if fmt is None:  # the first file decides; each reader refuses, by name, a file that is not of its format
        fmt = detect(files[0], loads)
        if fmt is None:
            raise UserError(f"{files[0]}: not a trace or usage log of a known format ({', '.join(FORMATS)}); name "
                            "one (bench workload --format, bench model trace_format=) if the detection is wrong")
    table = FORMATS[fmt][1](files, loads)
    where = str(paths[0]) if len(paths) == 1 else f"{len(files)} {fmt} files"
    return check(table, where)
