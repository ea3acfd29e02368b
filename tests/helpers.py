"""What the tests share that is not a fixture: the repository's paths, the CLI as a user runs it, system tools
installed for real, and benchmarks run in-process."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "tests" / "data" / "runs"
APT_WAIT = "DPkg::Lock::Timeout=600"  # tests on two workers may install at once: wait for dpkg's lock, never fail on it  # two recorded CPU runs (cpu_a, cpu_b) of the same points


def NO_COST(c):
    """The cost model of a test's throw-away benchmark (@benchmark needs one): one point overhead, nothing timed."""
    from bench.harness.cost import Work

    return Work()


def run_cli(*args, cwd=None, timeout=300, env=None):
    """Run `python -m bench ...` as a user would; returns CompletedProcess with text output."""
    e = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout, env=e)


def o_direct_refusal(d) -> str | None:
    """Why the storage tests cannot put their files in directory ``d`` (None: they can): its filesystem is memory
    (tmpfs takes O_DIRECT since Linux 6.6, but its pages are the data: the benchmarks skip it), or an aligned 4 KiB
    block cannot be written and read back through O_DIRECT there."""
    import mmap
    import tempfile

    from bench.benchmarks.storage.benchmarks import MEMORY_FILESYSTEMS, filesystem_of

    fs = filesystem_of(str(d))
    if fs in MEMORY_FILESYSTEMS:
        return f"{d} is on {fs} (memory)"
    try:
        fd, path = tempfile.mkstemp(prefix=".o-direct-probe-", dir=d)
    except OSError as e:
        return f"{d}: {e.strerror}"
    os.close(fd)
    block, back = mmap.mmap(-1, 4096), mmap.mmap(-1, 4096)  # page aligned, as O_DIRECT needs
    block.write(bytes(range(256)) * 16)
    try:
        fd = os.open(path, os.O_RDWR | os.O_DIRECT)
        try:
            ok = os.pwrite(fd, block, 0) == 4096 and os.preadv(fd, [back], 0) == 4096 and back[:] == block[:]
        finally:
            os.close(fd)
        return None if ok else f"{d}: a 4 KiB block read back through O_DIRECT differs from what was written"
    except OSError as e:
        return f"{d}: O_DIRECT refused ({e.strerror})"
    finally:
        os.unlink(path)


def system_tool(cmd: str, package: str) -> str:
    """The path of a system tool the tests use for real (chromium, fio): installed with apt-get when missing on a
    root Debian/Ubuntu machine (CI's clean one), else the test is skipped with the reason."""
    found = shutil.which(cmd)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"{cmd} not installed (apt-get install {package}) and this machine cannot install it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = None
    for update in (False, True):
        if update:
            subprocess.run(["apt-get", "-o", APT_WAIT, "update", "-q"], capture_output=True, env=env, timeout=600)
        r = subprocess.run(["apt-get", "-o", APT_WAIT, "install", "-y", "-q", "--no-install-recommends", package],
                           capture_output=True, text=True, env=env, timeout=900)
        if r.returncode == 0 and shutil.which(cmd):
            return shutil.which(cmd)
    pytest.skip(f"{cmd}: apt-get install {package} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")


def run_benchmarks(names, overrides, tmp_path, cpu_sized: bool = False, device: str = "cpu"):
    """Compose the config with ``overrides`` and run ``names`` in-process on ``device`` (the CPU unless a GPU test
    asks for cuda); returns the records."""
    from bench.core.config import apply_cpu_overrides
    from bench.hw.device import Device
    from bench.plan.suite import run_suite
    from bench.commands.overrides import compose_checked
    from bench.benchmarks import load_all
    from bench.core.store import RunStore, read_records

    cfg = compose_checked(["harness.progress=false", f"harness.device={device}", *overrides])
    if cpu_sized:
        from bench.commands.overrides import keys_of

        apply_cpu_overrides(cfg, keys_of(overrides))
    reg = load_all()
    store = RunStore(tmp_path / "run", "t")
    run_suite([reg[n] for n in names], cfg, Device(device), store)
    store.finish("complete")
    return read_records(tmp_path / "run" / "records.jsonl")


def run_main(*args):
    """The CLI's entry point called in this process, for a user mistake refused before any work (no process
    start-up, the same code path as `python -m bench`); returns a CompletedProcess like :func:`run_cli`. A Python
    exception escaping the entry point fails the test instead of printing a traceback."""
    import contextlib
    import io

    from bench.commands import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in args]) or 0
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess(list(args), rc, out.getvalue(), err.getvalue())
