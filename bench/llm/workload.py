"""A workload preset's shape (conf/workload): sessions of turns over a growing context, the shared prefix, the
tokens in and out, and the latency targets; used by the replay (bench.llm.replay) and by the throughput model's
trace generation (bench.model.workload)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    """One preset: every session shares ``shared_prefix_tokens`` (system prompt, tools), adds
    ``session_context_tokens`` of its own (repository, ticket), then runs ``turns`` turns of ``new_tokens``
    (user message / tool output) in and ``output_tokens`` out; each turn's input is the whole history."""

    name: str
    shared_prefix_tokens: int
    session_context_tokens: int
    turns: int
    new_tokens: int
    output_tokens: int
    spread: float = 0.5  # lognormal sigma of per-turn sizes and turn counts in the generator
    think_time_s: float = 5.0  # mean gap between a turn's answer and the next request of the session
    sessions_per_s: float = 1.0
    max_context_tokens: int = 131072  # a session ends when its next request would exceed the context window

    @classmethod
    def from_cfg(cls, w) -> "Workload":
        fields = cls.__dataclass_fields__
        return cls(**{k: w[k] for k in fields if k in w})

    def turn_shapes(self) -> list[tuple[int, int, int]]:
        """(cached tokens available, new tokens, output tokens) per turn of the mean session: the cached part is
        everything the session has seen before this turn's new tokens (the shared prefix even on turn 1)."""
        out = []
        ctx = self.shared_prefix_tokens
        first_new = self.session_context_tokens + self.new_tokens
        for t in range(self.turns):
            new = first_new if t == 0 else self.new_tokens
            out.append((ctx, new, self.output_tokens))
            ctx += new + self.output_tokens
        return out

    def summary(self) -> dict:
        """The figures a preset is calibrated against: hit rate, input:output, KV read/write."""
        shapes = self.turn_shapes()
        cached = sum(c for c, _, _ in shapes)
        inp = sum(c + n for c, n, _ in shapes)
        out = sum(o for _, _, o in shapes)
        written = sum(n + o for _, n, o in shapes)  # new KV per turn: the new input and the generated tokens
        return {"hit_rate": cached / inp, "input_output_ratio": inp / out, "kv_read_write_ratio": cached / written,
                "mean_input_tokens": inp / len(shapes), "max_context_tokens": shapes[-1][0] + shapes[-1][1],
                "turns": len(shapes)}
