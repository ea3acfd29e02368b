"""Real agent traces and usage logs into one request table (bench.model.traces) and the seed's decomposition of them
(bench.model.sessions, `python -m bench workload`): WEKA's public traces (three kept as test data) against a plain
unlimited-cache replay, every other format written here, each response of a log counted once, bad input refused in
one line, and `bench model RUN trace=DIR` giving a verdict for real sessions."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.core.errors import UserError
from bench.model.sessions import decompose, summarize
from bench.model.traces import read_requests, to_trace
from tests.helpers import ROOT, RUNS, run_cli

WEKA = ROOT / "tests" / "data" / "traces" / "weka"


def plain_replay(files) -> dict:
    """Per file: hit blocks and hit tokens of an unlimited cache per conversation (sub-agents sharing its ids), a
    request hitting the longest prefix of its ids already seen; requests in time order (a sub-agent's from its
    start, duration_ms before its t)."""
    out = {}
    for f in files:
        d = json.loads(Path(f).read_text())
        reqs = []
        for r in d["requests"]:
            if r.get("type") == "subagent":
                start = r["t"] - r.get("duration_ms", 0) / 1e3
                reqs += [(start + q["t"], q) for q in r["requests"]]
            else:
                reqs.append((r["t"], r))
        seen, hb, ht = set(), 0, 0
        for _, q in sorted(reqs, key=lambda x: x[0]):
            k = 0
            for h in q["hash_ids"]:
                if h not in seen:
                    break
                k += 1
            hb += k
            ht += min(k * d["block_size"], q["in"])
            seen.update(q["hash_ids"])
        out[d["id"]] = (hb, ht)
    return out


def test_weka_traces_hit_as_a_plain_unlimited_cache_replay_says():
    t = read_requests([WEKA])
    assert t.source == "weka" and t.scope == "local" and t.block_tokens == 64 and len(t) == 39
    assert len(t.agent_names) == 2 and (t.agent >= 0).sum() == 12
    s = summarize(t)
    plain = plain_replay(sorted(WEKA.glob("*.json")))
    for name, (hb, ht) in plain.items():
        assert s["sessions"][name]["cache_read_tokens"] == ht, name
    assert {k: v[0] for k, v in plain.items()} == {"trace_0291": 31603, "trace_0058": 2388, "trace_0504": 343}
    tot = s["total"]
    assert tot["cache_read_tokens"] == 2197376 and tot["input_tokens"] == 2497743
    assert tot["cache_write_tokens"] == 300367 and tot["output_tokens"] == 20645
    assert tot["read_write_ratio"] == pytest.approx(2197376 / 300367)
    assert s["seed"]["hit_rate"] == 0.972 and s["subagents"]["agents"] == 2
    assert all(v is not None and v >= 0 for v in tot["reuse_s"].values())


def test_a_warm_shared_prefix_adds_the_tools_and_system_prompt_to_each_conversations_hits():
    t = read_requests([WEKA])
    cold, warm = summarize(t, "cold")["total"], summarize(t, "warm")["total"]
    assert warm["cache_read_tokens"] > cold["cache_read_tokens"]
    # at most the shared prefix of each conversation's first request comes in addition
    extra = sum(int(p) // 64 * 64 for p in t.shared_prefix_tokens)
    assert warm["cache_read_tokens"] - cold["cache_read_tokens"] <= extra


def test_workload_command_writes_the_keys_scripts_read(tmp_path):
    out = tmp_path / "w.json"
    r = run_cli("workload", str(WEKA), "--json", str(out), "--plots", str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "hit rate" in r.stdout and "97.2%" in r.stdout and "11.7x" in r.stdout and "100:1" in r.stdout
    res = json.loads(out.read_text())
    keys = {"requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "hit_rate",
            "read_write_ratio", "input_output_ratio", "reuse_s"}
    assert keys <= set(res["total"]) and set(res["total"]["reuse_s"]) == {"p50", "p90", "p99"}
    assert set(res["sessions"]) == {"trace_0058", "trace_0291", "trace_0504"}
    assert all(keys <= set(s) for s in res["sessions"].values())
    assert {p.name for p in (tmp_path / "p").iterdir()} == {"session_bars.png", "hit_rates.png", "reuse_times.png"}


def test_the_fleet_of_real_sessions_keeps_its_hits_with_more_cache(tmp_path):
    r = run_cli("workload", str(WEKA), "users=2", "model=llama3_8b", "--json", str(tmp_path / "f.json"))
    assert r.returncode == 0, r.stderr[-2000:]
    f = json.loads((tmp_path / "f.json").read_text())["fleet"]
    keep = [f["keep_hits"][k]["bytes_per_gpu"] for k in ("50%", "90%", "99%")]
    assert 0 < keep[0] <= keep[1] <= keep[2]
    hits = [p["hit_rate"] for p in f["curve"]]
    assert hits == sorted(hits) and hits[-1] == pytest.approx(f["unlimited_hit_rate"])
    assert f["working_set"]["peak_bytes"] > 0 and "to keep 90% of the hits" in r.stdout


def _claude_line(session, mid, t, usage, sidechain=False, agent=None):
    d = {"type": "assistant", "sessionId": session, "uuid": f"{mid}-{t}", "timestamp": f"2026-11-01T10:00:{t:02d}Z",
         "isSidechain": sidechain, "message": {"id": mid, "model": "claude-sonnet-4", "usage": usage}}
    if agent:
        d["agentId"] = agent
    return json.dumps(d)


def usage(uncached, write, read, out):
    return {"input_tokens": uncached, "cache_creation_input_tokens": write, "cache_read_input_tokens": read,
            "output_tokens": out}


def test_a_claude_code_log_counts_each_response_once_and_its_sub_agents_apart(tmp_path):
    proj = tmp_path / "proj"
    (proj / "s1" / "subagents").mkdir(parents=True)
    lines = [json.dumps({"type": "summary", "summary": "x"}),
             _claude_line("s1", "m1", 1, usage(3, 12000, 0, 50)),
             _claude_line("s1", "m1", 1, usage(3, 12000, 0, 50)),  # the same response, written again
             _claude_line("s1", "m2", 9, usage(3, 500, 12000, 80)),
             _claude_line("s1", "m2", 9, usage(3, 500, 12000, 80)),
             _claude_line("s1", "m2", 9, usage(3, 500, 12000, 120)),  # a later snapshot: its usage counts
             _claude_line("s1", "m3", 20, usage(3, 300, 12500, 40))]
    (proj / "s1.jsonl").write_text("\n".join(lines) + "\n")
    (proj / "s1" / "subagents" / "agent-a1.jsonl").write_text(
        _claude_line("s1", "m9", 12, usage(2, 2000, 11000, 30), sidechain=True, agent="a1") + "\n")
    t = read_requests([proj])
    assert t.source == "claude_code" and len(t) == 4 and t.implied
    assert (t.agent >= 0).sum() == 1
    s = summarize(t)["total"]
    assert s["requests"] == 4 and s["cache_read_tokens"] == 12000 + 12500 + 11000
    assert s["cache_write_tokens"] == 12000 + 500 + 300 + 2000 and s["uncached_tokens"] == 11
    assert s["output_tokens"] == 50 + 120 + 40 + 30  # the last line of each message.id
    d = decompose(t)
    # the implied blocks replay what was logged: each read is a prefix of the agent's earlier context (or the shared
    # prefix every first request reads), block-rounded
    assert np.all(d.simulated_hit_tokens <= d.read) and np.all(d.read - d.simulated_hit_tokens < 64 * 2)


def test_codex_openai_qwen_and_mooncake_files_are_read_and_detected(tmp_path):
    codex = tmp_path / "rollout.jsonl"
    ev = lambda i, inp, c, o: json.dumps({"timestamp": f"2026-11-01T10:00:{i:02d}Z", "type": "event_msg", "payload": {  # noqa
        "type": "token_count", "info": {"last_token_usage": {"input_tokens": inp, "cached_input_tokens": c,
                                                             "output_tokens": o},
                                        "total_token_usage": {"input_tokens": i}}}})
    codex.write_text("\n".join([json.dumps({"type": "session_meta", "payload": {"id": "c1"}}),
                                json.dumps({"type": "turn_context", "payload": {"model": "gpt-5"}}),
                                ev(1, 8000, 0, 100), ev(1, 8000, 0, 100), ev(2, 9000, 7936, 50)]) + "\n")
    t = read_requests([codex])
    assert t.source == "codex" and len(t) == 2 and int(t.cache_read.sum()) == 7936 and (t.cache_write == -1).all()
    s = summarize(t)["total"]
    assert s["cache_write_tokens"] is None and s["read_write_ratio"] is None and s["hit_rate"] == 7936 / 17000
    oa = tmp_path / "openai.jsonl"
    oa.write_text(json.dumps({"created": 1, "model": "gpt-4o", "usage": {
        "prompt_tokens": 5000, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 4096}}}) + "\n")
    assert read_requests([oa]).source == "openai"
    qwen = tmp_path / "qwen.jsonl"
    qwen.write_text("\n".join(json.dumps({"chat_id": c, "parent_chat_id": p, "timestamp": ts, "input_length": n,
                                          "output_length": 10, "type": "text", "turn": 1, "hash_ids": ids})
                              for c, p, ts, n, ids in ((1, -1, 0.0, 40, [1, 2, 3]), (2, 1, 5.0, 60, [1, 2, 3, 4]),
                                                       (3, -1, 6.0, 20, [9, 10]))) + "\n")
    q = read_requests([qwen])
    assert q.source == "qwen" and q.block_tokens == 16 and len(q.names) == 2  # chat 2 belongs to chat 1's conversation
    assert summarize(q)["total"]["cache_read_tokens"] == 48  # the second request hits its 3 blocks
    moon = tmp_path / "moon.jsonl"
    moon.write_text("\n".join(json.dumps({"timestamp": i * 1000, "input_length": 2000, "output_length": 5,
                                          "hash_ids": [0, 1, 2, 3 + i]}) for i in range(3)) + "\n")
    m = read_requests([moon])
    assert m.source == "mooncake" and m.block_tokens == 512 and len(to_trace(m)) == 3


@pytest.mark.parametrize("content, expect", [
    ('{"timestamp": 0, "input_length": 100, "output_length": 1, "hash_ids": ["31"]}', "hash id '31' is not an integer"),
    ('{"timestamp": 0, "input_length": 100, "output_length": 1, "hash_ids": [1180591620717411303424]}',
     "hash id 1180591620717411303424 does not fit 64 bits"),
    ('{"timestamp": 0, "input_length": NaN, "output_length": 1, "hash_ids": [1]}', "input_length=nan is not an integer"),
    ('{"timestamp": 0, "input_length": 100, "output_length": 1, "hash_ids": [1, 2, 3]}', "do not match the lengths"),
    ('{"timestamp": 0, "input_length": 0, "output_length": 1, "hash_ids": []}', "at least one input token"),
    ('{"timestamp": 0, "input_length": 100, "output_length": 1, "hash_ids": [1]}\n{"timestamp": 1, "input_len',
     "line 2 is not JSON"),
    ("a,b,c\n1,2,3\n", "not a trace or usage log of a known format"),
])
def test_bad_input_is_one_line_naming_the_file_and_line(tmp_path, content, expect):
    p = tmp_path / "t.jsonl"
    p.write_text(content + "\n")
    r = run_cli("workload", str(p))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and expect in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_ids_of_64_bits_unsigned_keep_their_identity(tmp_path):
    big = (1 << 64) - 1
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(json.dumps({"timestamp": i, "input_length": 1024, "output_length": 1,
                                       "hash_ids": [big, big - 1]}) for i in range(2)) + "\n")
    t = read_requests([p])
    assert len(np.unique(t.blocks)) == 2  # two ids, never truncated or merged
    assert summarize(t)["total"]["cache_read_tokens"] == 1024
    p.write_text("\n".join(json.dumps({"timestamp": i, "input_length": 1024, "output_length": 1,
                                       "hash_ids": [big, 7]}) for i in range(2)) + "\n")  # numpy alone: float64
    t = read_requests([p])
    assert len(np.unique(t.blocks)) == 2 and summarize(t)["total"]["cache_read_tokens"] == 1024


def test_an_empty_directory_and_a_missing_path_are_one_line(tmp_path):
    with pytest.raises(UserError, match="a directory with no .json or .jsonl file"):
        read_requests([tmp_path])
    with pytest.raises(UserError, match="no such file or directory"):
        read_requests([tmp_path / "nope"])


def test_model_gives_a_verdict_for_real_sessions(tmp_path):
    out = tmp_path / "m"
    r = run_cli("model", str(RUNS / "cpu_a"), f"trace={WEKA}", "users=2", "plots=false", "verdict.bootstrap=20",
                "fleet.sessions=50", f"out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "model.json").read_text())
    assert res["workload"]["kind"] == "trace" and res["workload"]["block_tokens"] == 64
    assert "weka" in res["workload"]["from"] and res["trace"]["total"]["cache_read_tokens"] == 2197376
    assert res["verdict"]["outcome"] in ("supported", "not_supported", "undetermined")
