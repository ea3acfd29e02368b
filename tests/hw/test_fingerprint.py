import pytest

from bench.hw.fingerprint import fingerprint, pcie_peak_gbps, storage_info, _Probe


def test_pcie_peak_gen5_x16_is_about_63_gbps():
    assert pcie_peak_gbps(5, 16) == pytest.approx(63.0, rel=0.01)
    assert pcie_peak_gbps(4, 16) == pytest.approx(31.5, rel=0.01)
    assert pcie_peak_gbps(None, 16) is None


def test_storage_info_names_filesystem_of_a_path(tmp_path):
    probe = _Probe()
    info = storage_info(str(tmp_path), probe)
    assert info["exists"] and info["filesystem"] and info["mountpoint"]


def test_missing_storage_path_is_null_with_reason():
    fp = fingerprint(storage_path="/definitely/not/here")
    assert fp["storage"]["exists"] is False
    assert "does not exist" in fp["missing"]["storage"]
