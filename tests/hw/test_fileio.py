import errno
import os
from pathlib import Path

import pytest

import bench.benchmarks.storage.benchmarks as storage
import bench.hw.fileio as fileio
from bench.hw.device import Device
from tests.helpers import run_benchmarks, run_main


def cfg(tmp_path, *overrides):
    return ["suite=quick", "model=tiny", "harness.time_budget_s=0.05", f"storage.path={tmp_path}",
            "storage.file_bytes=8388608", "storage.request_bytes=[65536]", "storage.kv_block_tokens=[16]",
            "storage.queue_depths=[2]", "storage.patterns=[random]", *overrides]


def run(names, overrides, tmp_path):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return run_benchmarks(names, overrides, out)


def test_storage_tests_get_a_directory_that_takes_o_direct(o_direct_dir):
    """The storage tests' files go where O_DIRECT works and a disk is measured (the o_direct_dir fixture); a
    memory filesystem is refused even where it takes O_DIRECT (tmpfs since Linux 6.6)."""
    from tests.helpers import o_direct_refusal

    assert fileio.create_pattern_file(str(o_direct_dir / "f"), 1 << 20, 5, "require") == "o_direct"
    assert storage.filesystem_of(str(o_direct_dir)) not in storage.MEMORY_FILESYSTEMS
    if storage.filesystem_of("/dev/shm") == "tmpfs":
        assert "tmpfs (memory)" in o_direct_refusal("/dev/shm")


def test_alignment_of_buffers_and_requests(tmp_path):
    a = fileio.direct_alignment(str(tmp_path))
    assert a >= 4096 and a % 512 == 0
    for align in (4096, 8192, 65536):
        mv = fileio.aligned_buffer(10000, align)
        import ctypes
        addr = ctypes.addressof(ctypes.c_char.from_buffer(mv))
        assert addr % align == 0 and len(mv) == 10000
    from bench.hw.hostmem import host_buffer
    buf, facts = host_buffer(12345, True, Device("cpu"))
    assert buf.data_ptr() % 4096 == 0 and buf.numel() == 12345 and facts["pinned"] is False


def test_unaligned_request_is_skipped_with_reason(tmp_path, o_direct_dir):
    c = cfg(o_direct_dir, "storage.kv_block_tokens=[1]")  # tiny: 1 token = 2048 bytes, below the alignment
    recs = run(["file_read"], c, tmp_path)
    odd = [r for r in recs if r["params"]["request_bytes"] == 2048][0]
    assert odd["status"] == "skipped" and "alignment" in odd["reason"]


def test_page_cache_drop_is_verified(o_direct_dir):
    p = str(o_direct_dir / "f")
    assert fileio.create_pattern_file(p, 1 << 20, 5, "auto") in ("o_direct", "buffered+drop")
    fd = os.open(p, os.O_RDONLY)
    os.read(fd, 1 << 20)  # buffered read pulls the pages in
    assert fileio.resident_pages(fd, 1 << 20) > 0
    assert fileio.drop_cache(fd, 1 << 20) == 0
    os.close(fd)


def test_read_that_would_hit_the_cache_is_never_a_result(tmp_path, o_direct_dir, monkeypatch):
    monkeypatch.setattr(fileio, "drop_cache", lambda fd, n: 7)  # as on tmpfs: pages cannot be evicted
    monkeypatch.setattr(storage, "drop_cache", lambda fd, n: 7)
    recs = run(["file_read"], cfg(o_direct_dir), tmp_path)
    assert recs and all(r["status"] == "skipped" and "page cache" in r["reason"] for r in recs)
    assert all("gbps" not in r["metrics"] for r in recs)


def test_tmpfs_gives_fallback_or_clear_skip_never_a_cached_number(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or "tmpfs" not in Path("/proc/mounts").read_text():
        pytest.skip("no tmpfs at /dev/shm")
    d = shm / f"tb-test-{os.getpid()}"
    d.mkdir()
    try:
        recs = run(["file_read"], cfg(d), tmp_path)
        for r in recs:
            assert r["status"] == "skipped", r  # tmpfs pages are the storage: nothing to measure as a disk
            assert "tmpfs (memory)" in r["reason"]
        assert not list(d.iterdir())  # pattern files removed
    finally:
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


def test_integrity_check_catches_a_flipped_byte(tmp_path):
    p = str(tmp_path / "f")
    fileio.create_pattern_file(p, 1 << 20, 3, "off")
    tile = fileio.pattern_tile(3)
    with open(p, "rb") as f:
        data = f.read()
    assert fileio.first_bad_page(data[65536:131072], tile, 65536) is None
    assert fileio.first_bad_page(data[65536:131072], tile, 0) == 0  # wrong offset: page stamps differ
    with open(p, "r+b") as f:
        f.seek(70000)
        b = f.read(1)
        f.seek(70000)
        f.write(bytes([b[0] ^ 0x01]))
    with open(p, "rb") as f:
        data = f.read()
    assert fileio.first_bad_page(data[65536:131072], tile, 65536) == 70000 // 4096


def test_corrupt_file_fails_the_read_point_loudly(tmp_path, o_direct_dir, monkeypatch):
    real = fileio.create_pattern_file

    def corrupting(path, nbytes, seed, direct, chunk=16 << 20):
        mode = real(path, nbytes, seed, direct, chunk)
        with open(path, "r+b") as f:
            f.seek(12345)
            f.write(b"\x00\xff")
        return mode

    monkeypatch.setattr(storage, "create_pattern_file", corrupting)
    recs = run(["file_read"], cfg(o_direct_dir, "storage.patterns=[sequential]"), tmp_path)
    assert recs[0]["status"] == "error" and "wrong data" in recs[0]["reason"]


def test_not_enough_space_is_checked_before_writing(tmp_path, o_direct_dir, monkeypatch):
    monkeypatch.setattr(fileio, "free_bytes", lambda p: 1 << 20)
    recs = run(["file_write"], cfg(o_direct_dir), tmp_path)
    assert recs and all(r["status"] == "skipped" and "not enough free space" in r["reason"] for r in recs)
    assert not list(o_direct_dir.glob(".tierbench-*"))


def test_enospc_while_writing_removes_partial_file(tmp_path, monkeypatch):
    real_pwrite = os.pwrite
    calls = {"n": 0}

    def full_disk(fd, data, off):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, off)

    monkeypatch.setattr(fileio.os, "pwrite", full_disk)
    with pytest.raises(fileio.StorageFault, match="no space left"):
        fileio.create_pattern_file(str(tmp_path / "f"), 64 << 20, 1, "auto", chunk=1 << 20)
    assert not (tmp_path / "f").exists()


def test_storage_suite_on_cpu_is_verified_and_cleans_up(tmp_path, o_direct_dir):
    c = cfg(o_direct_dir, "storage.patterns=[sequential,random]")
    names = ["file_read", "file_write", "file_read_cache_check", "gpu_file_read_bounce", "gpu_file_write_bounce"]
    recs = run(names, c, tmp_path)
    assert all(r["status"] == "ok" and r["verified"] for r in recs), [(r["benchmark"], r["reason"]) for r in recs]
    for r in recs:
        if r["benchmark"] in ("file_read", "file_write"):
            m = r["metrics"]
            assert m["gbps"] > 0 and m["iops"] > 0 and m["lat_p99_us"] >= m["lat_p50_us"] > 0
            assert r["info"]["io_mode"] in ("o_direct", "buffered+drop")
    assert not list(o_direct_dir.glob(".tierbench-*"))  # pattern files removed at run end


@pytest.mark.parametrize("path, expect", [
    ("/definitely/missing", "storage.path='/definitely/missing' does not exist"),
    ("/sys", "storage.path='/sys' is not writable"),
])
def test_bad_storage_path_is_one_line_exit_2(path, expect):
    r = run_main("run", "benchmark=storage", f"storage.path={path}")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"error: {r.stderr.strip()[7:]}"]
    assert expect in r.stderr


@pytest.mark.skipif(storage.filesystem_of("/dev/shm") != "tmpfs", reason="no tmpfs at /dev/shm")
def test_writes_to_a_memory_filesystem_are_never_storage_numbers(tmp_path):
    import tempfile

    d = tempfile.mkdtemp(dir="/dev/shm")
    try:
        recs = run(["file_write", "gpu_file_write_bounce"], cfg(tmp_path, f"storage.path={d}"), tmp_path)
    finally:
        import shutil
        shutil.rmtree(d, ignore_errors=True)
    assert recs and all(r["status"] == "skipped" and "tmpfs (memory)" in r["reason"] for r in recs)
    assert all("gbps" not in r["metrics"] for r in recs)


def test_work_dirs_of_killed_runs_are_removed(tmp_path):
    import socket

    host = socket.gethostname().split(".")[0]
    dead = tmp_path / f".tierbench-{host}-999999999"  # no such process
    dead.mkdir()
    (dead / "kv-1.bin").write_bytes(b"x" * 4096)
    alive = tmp_path / f".tierbench-{host}-1"  # pid 1 exists: another live run's, never touched
    alive.mkdir()
    removed = storage.remove_stale(tmp_path, host)
    assert removed == [(dead.name, 4096)] and not dead.exists() and alive.exists()


# -- engines: Linux AIO, threads, fio ---------------------------------------------------------------------------
def test_engine_axis_is_recorded_and_every_engine_verified(tmp_path, o_direct_dir):
    c = cfg(o_direct_dir, "storage.engines=[aio,threads]", "storage.request_bytes=[4096,65536]",
            "storage.queue_depths=[1,8]", "storage.kv_block_tokens=[]", "storage.patterns=[random]")
    recs = run(["file_read", "file_write"], c, tmp_path)
    assert {r["params"]["engine"] for r in recs} == {"aio", "threads"}
    for r in recs:
        assert r["status"] == "ok" and r["verified"], (r["params"], r["reason"])
        assert r["info"]["engine"] == r["params"]["engine"]
        m = r["metrics"]
        assert m["lat_p999_us"] >= m["lat_p99_us"] >= m["lat_p50_us"] > 0 and m["iops"] > 0


def test_aio_engine_reads_what_threads_read_and_catches_a_corrupted_block(o_direct_dir):
    from bench.hw.fileio.aio import AioPass

    p = str(o_direct_dir / "f")
    fb = 4 << 20
    assert fileio.create_pattern_file(p, fb, 7, "auto") == "o_direct"
    tile = fileio.pattern_tile(7)
    fd, mode = fileio.open_file(p, False, "auto")
    offs = fileio.offsets("random", 4096, fb // 4096, fb, 1)  # every page of the file, in random order
    a = AioPass(fd, offs, 4096, 16, False, 4096)
    assert a.run(verify_tile=tile) == []
    a.run()
    assert len(a.latencies_s[-1]) == len(offs) and (a.latencies_s[-1] > 0).all()
    with open(p, "r+b") as f:  # flip a byte in page 300
        f.seek(300 * 4096 + 100)
        b = f.read(1)
        f.seek(300 * 4096 + 100)
        f.write(bytes([b[0] ^ 0x40]))
    fileio.drop_cache(fd, fb)
    bad = a.run(verify_tile=tile)
    assert bad == [(300 * 4096, 300)]
    a.close()
    os.close(fd)


@pytest.mark.parametrize("engine", ["aio", "threads"])
@pytest.mark.parametrize("req,qd", [(4096, 16), (65536, 3), (1 << 20, 1), (1 << 20, 4), (2 << 20, 2)])
def test_writes_leave_the_files_own_pattern(o_direct_dir, engine, req, qd):
    """Writes go from stamped windows of a few slot buffers, nothing copied in the pass (a slot's earlier requests
    left other stamps in it): after random writes over a zeroed file, the file is byte for byte the pattern
    file, and the buffers are what the point's memory check counted."""
    from bench.benchmarks.storage.benchmarks import engine_host_bytes
    from bench.hw.fileio.aio import WINDOW, AioPass

    fb = 8 << 20
    ref, p = str(o_direct_dir / "ref"), str(o_direct_dir / "f")
    fileio.create_pattern_file(ref, fb, 7, "auto")
    with open(p, "wb") as f:
        f.write(bytes(fb))
    fd, mode = fileio.open_file(p, True, "auto")
    assert mode == "o_direct"
    offs = fileio.offsets("random", req, fb // req, fb, 3)  # every block, random order
    if engine == "aio":
        a = AioPass(fd, offs, req, qd, True, 4096, fileio.pattern_tile(7))
        assert a.mode == WINDOW and len(a.buf) == engine_host_bytes("aio", req, qd, len(offs), True)
    else:
        a = fileio.IOPass(fd, offs, req, qd, True, 4096, fileio.pattern_tile(7))
        assert len(a.slots) == engine_host_bytes("threads", req, qd, len(offs), True)
    a.run()
    a.run()
    if engine == "aio":
        a.close()
    os.close(fd)
    assert open(p, "rb").read() == open(ref, "rb").read()


def test_aio_needs_o_direct_and_says_so(tmp_path, o_direct_dir):
    recs = run(["file_read"], cfg(o_direct_dir, "storage.engines=[aio,threads]", "storage.direct=off"), tmp_path)
    by = {r["params"]["engine"]: r for r in recs}
    assert by["aio"]["status"] == "skipped" and "O_DIRECT" in by["aio"]["reason"]
    assert by["threads"]["status"] == "ok"


@pytest.mark.parametrize("name,write,gbps,p99", [("randread_4k_qd16", False, 0.3226, 259.072),
                                                  ("write_1m_qd1", True, 1.4589, 831.488)])
def test_fio_json_parser_on_recorded_output(name, write, gbps, p99):
    import json

    from bench.hw.fileio import fio as fiorun
    from tests.helpers import ROOT

    doc = json.loads((ROOT / "tests" / "data" / "fio" / f"{name}.json").read_text())
    r = fiorun.parse(doc, write)
    assert r["gbps"] == pytest.approx(gbps, rel=1e-3) and r["lat_p99_us"] == pytest.approx(p99)
    assert r["fio_version"].startswith("fio-3") and r["lat_p999_us"] >= r["lat_p99_us"] >= r["lat_p50_us"]
    assert r["latency_basis"].startswith("clat")  # recorded without --lat_percentiles: said, not passed as lat
    assert fiorun.parse(doc, write, loops=4)["seconds_per_pass"] == pytest.approx(r["seconds_per_pass"] / 4)
    with pytest.raises(ValueError, match="moved no bytes"):
        fiorun.parse(doc, not write)


def test_fio_beside_tierbench_on_the_same_requests(tmp_path, o_direct_dir):
    from tests.helpers import system_tool

    system_tool("fio", "fio")
    c = cfg(o_direct_dir, "storage.engines=[aio,fio]", "storage.request_bytes=[4096]", "storage.queue_depths=[4]",
            "storage.kv_block_tokens=[]",
            "storage.patterns=[random,sequential]", "harness.min_samples=3")
    recs = run(["file_read", "file_write"], c, tmp_path)
    assert len(recs) == 8 and all(r["status"] == "ok" for r in recs), [(r["params"], r["reason"]) for r in recs]
    for r in (r for r in recs if r["params"]["engine"] == "fio"):
        assert r["info"]["fio_version"].startswith("fio-") and "--iodepth=4" in r["info"]["fio_command"]
        assert r["metrics"]["gbps"] > 0 and r["metrics"]["lat_p999_us"] > 0 and r["verified"] is None
        assert r["info"]["fio_latency"].startswith("lat (submission")  # the aio engine's latency, not clat
        # fio's runs stop by the harness's own rule (as many seconds of I/O as the twin's passes), >= 3 runs
        assert r["metrics"]["n"] >= 3 and r["metrics"]["stop_reason"] in ("noise_target", "time_budget"), r["metrics"]
        twin = next(x for x in recs if x["params"] == {**r["params"], "engine": "aio"} and
                    x["benchmark"] == r["benchmark"])
        assert twin["info"]["requests_per_pass"] == r["info"]["requests_per_pass"]


def test_fio_missing_is_a_skipped_point_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    recs = run(["file_read"], cfg(tmp_path, "storage.engines=[fio]"), tmp_path)
    assert recs and all(r["status"] == "skipped" and "fio not installed" in r["reason"] for r in recs)
