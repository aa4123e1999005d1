"""Benchmarks: timing helpers, sweeps and recorded-result I/O (results go to ``data/bench/*.json``)."""

from .timing import environment_record, time_cpu

__all__ = ["time_cpu", "environment_record"]
