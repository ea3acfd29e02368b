"""Sizing rules the storage benchmarks and their cost model share."""

FIO_MIN_RUN_S = 0.5  # fio rounds its runtime to the millisecond: each fio run repeats the pass for at least this
