"""CPU timing and the environment stamp every recorded result carries."""

from __future__ import annotations

import datetime as _dt
import platform
import statistics
import time
from typing import Callable

import torch


def time_cpu(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1) -> dict[str, float]:
    """Run ``fn`` ``warmup`` + ``repeat`` times; return the median/min/max wall time in seconds."""
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
