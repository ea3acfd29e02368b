"""The harness: runs each benchmark point with warm-up, timing, stopping, clock sampling and failure isolation.

A benchmark function receives a :class:`State`; it allocates and prepares its buffers, declares what one call
moves (``add_bytes``) or computes (``add_flops``), hands the call to ``state.exec`` and verifies the result.
Everything about timing (bench.harness.timing), a point's record (bench.harness.point) and its declarations
(bench.harness.state) belongs here; the suite loop is bench.plan.suite.
"""
from bench.harness.point import plausibility, run_point  # noqa: F401
from bench.harness.state import (Need, RunContext, State, VerificationError, fit_problem,  # noqa: F401
                                 host_budget_bytes, memory_budget, need)
