"""Contention readings (bench.hw.contention): a process the run started for its own measurement (the handoff
family's peer) is the run's own, not a neighbour."""
import subprocess
import sys
import time

from bench.hw.contention import between, snapshot


def test_a_helper_process_is_the_runs_own_cpu():
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 5: pass"])
    try:
        time.sleep(0.3)  # the child is spinning
        a, a_helped = snapshot(), snapshot(helpers={busy.pid})
        time.sleep(0.5)
        b, b_helped = snapshot(), snapshot(helpers={busy.pid})
    finally:
        busy.kill()
        busy.wait()
    alone, helped = between(a, b), between(a_helped, b_helped)
    child = alone["other_processes_cores"] - helped["other_processes_cores"]  # the child's share of a core
    assert child > 0.25, (alone, helped)  # a spinning child (a busy 2-core machine still gives it a good share)
