"""Numbers for people (bench.core.units): the unit that reads best, three significant figures, no e-notation."""
import math

import pytest

from bench.core.units import bytes_binary, bytes_decimal, count, millis, percent, ppm, rate, seconds, sig


@pytest.mark.parametrize("x, text", [(0, "0"), (0.0123456, "0.0123"), (4.5678, "4.57"), (789.4, "789"),
                                     (12345.6, "12346"), (9.996, "10"), (-0.5, "-0.5"), (3e9, "3.00e+09"),
                                     (math.inf, "inf"), (math.nan, "n/a")])
def test_sig(x, text):
    assert sig(x) == text


def test_durations_sizes_rates_counts():
    assert [seconds(v) for v in (850e-6, 0.0123, 4.5, 720, 3 * 3600, 3 * 86400, None)] == \
        ["850 us", "12.3 ms", "4.5 s", "12 min", "3 h", "3 days", "n/a"]
    assert millis(1500) == "1.5 s"
    assert [bytes_binary(v) for v in (512, 4096, 1.5 * 2**30, 3.2 * 2**40)] == ["512 B", "4 KiB", "1.5 GiB", "3.2 TiB"]
    assert [bytes_decimal(v) for v in (512, 77.3e9, 3.6e12)] == ["512 B", "77.3 GB", "3.6 TB"]
    assert [rate(v) for v in (0.0001, 0.25, 12.66, 4276, math.inf, None)] == \
        ["100 KB/s", "250 MB/s", "12.7 GB/s", "4.28 TB/s", "unbounded", "n/a"]
    assert [count(v, "req") for v in (950, 12300, 4.5e6)] == ["950 req", "12.3 Kreq", "4.5 Mreq"]
    assert (ppm(0), ppm(5.6e-7)) == ("0", "0.56 ppm")


@pytest.mark.parametrize("x, text", [(0, "0%"), (0.0046, "0.46%"), (0.032, "3.2%"), (0.18, "18%"), (1.0, "100%"),
                                     (None, "n/a"), (math.nan, "n/a")])
def test_percent(x, text):
    assert percent(x) == text
