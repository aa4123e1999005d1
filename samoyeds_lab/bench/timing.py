"""CPU timing and the environment stamp every recorded result carries."""

from __future__ import annotations

import datetime as _dt
import platform
import statistics
import time
from typing import Callable

import torch

from .._checks import check_int, check_positive_int


def time_cpu(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1) -> dict[str, float]:
    """Run ``fn`` ``warmup`` + ``repeat`` times; return the median/min/max wall time in seconds.

    ``fn`` takes no arguments; ``repeat >= 1`` and ``warmup >= 0`` are ints.
    """
    if not callable(fn):
        raise TypeError(f"fn: expected a callable taking no arguments, got {type(fn).__name__}")
    repeat = check_positive_int("repeat", repeat)
    warmup = check_int("warmup", warmup, lo=0)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeat": repeat}


def environment_record() -> dict[str, object]:
    """Where a measurement was taken: device, versions, date (goes into every bench record)."""
    from ..device import device_info

    info = device_info()
    import os

    return {
        "device": info.gpu_name if info.backend == "cupy" else f"CPU {platform.machine()} ({os.cpu_count()} cores)",
        "backend": info.backend,
        "torch": torch.__version__,
        "cupy": info.cupy_version,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
    }
