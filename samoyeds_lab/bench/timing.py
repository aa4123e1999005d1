"""Timing loops (CPU wall clock; GPU events around batches of back-to-back calls) and the environment
stamp every recorded result carries."""

from __future__ import annotations

import datetime as _dt
import platform
import statistics
import time
from dataclasses import asdict, dataclass
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


#: How a batch was launched: one CUDA graph replay holding ``calls`` runs, or ``calls`` plain launches.
TIMING_METHODS = ("cuda_graph", "launches")


@dataclass(frozen=True)
class BatchTiming:
    """Per-call times of :func:`time_batches` (milliseconds): each batch's event time / calls.

    Attributes
    ----------
    median_ms, min_ms, max_ms : float
        Over the batches.
    per_batch_ms : tuple of float
        Every batch's per-call time, in order.
    batches, calls_per_batch, warmup : int
    method : {"cuda_graph", "launches"}
    fallback : str or None
        Why a graph capture was not used (None when it was, or was not asked for).
    flush_bytes : int
        Bytes written before every batch to evict L2 (0: no flush).
    """

    median_ms: float
    min_ms: float
    max_ms: float
    per_batch_ms: tuple[float, ...]
    batches: int
    calls_per_batch: int
    warmup: int
    method: str
    fallback: str | None
    flush_bytes: int

    def as_dict(self) -> dict:
        d = asdict(self)
        d["per_batch_ms"] = list(self.per_batch_ms)
        return d


def time_batches(run: Callable[[], object], *, event: Callable[[], object], calls: int = 50, batches: int = 7,
                 warmup: int = 3, flush: Callable[[], object] | None = None, flush_bytes: int = 0,
                 capture: Callable[[int], Callable[[], object]] | None = None) -> BatchTiming:
    """Time ``run`` as ``batches`` batches of ``calls`` back-to-back calls, each bracketed by two events.

    Parameters
    ----------
    run : callable
        One call of what is timed (e.g. :meth:`samoyeds_lab.kernels.plan.KernelPlan.run`).
    event : callable
        Makes an event with ``record()``, ``synchronize()`` and ``elapsed_time(other) -> ms`` (the
        ``torch.cuda.Event(enable_timing=True)`` interface).
    calls, batches, warmup : int
        Calls per batch (>= 1), batches (>= 1), untimed warm-up calls before the first batch (>= 0).
    flush : callable, optional
        Called before every batch, outside the events (write a buffer larger than L2).
    flush_bytes : int
        What ``flush`` writes, recorded.
    capture : callable, optional
        ``capture(calls)`` returns a callable that replays ``calls`` runs (a CUDA graph); when it raises,
        the batches are plain back-to-back calls and the reason is kept in :attr:`BatchTiming.fallback`.

    Returns
    -------
    BatchTiming
        Per-call median, min and max over the batches.
    """
    for name, f in (("run", run), ("event", event)):
        if not callable(f):
            raise TypeError(f"{name}: expected a callable, got {type(f).__name__}")
    for name, f in (("flush", flush), ("capture", capture)):
        if f is not None and not callable(f):
            raise TypeError(f"{name}: expected a callable or None, got {type(f).__name__}")
    calls = check_positive_int("calls", calls)
    batches = check_positive_int("batches", batches)
    warmup = check_int("warmup", warmup, lo=0)
    flush_bytes = check_int("flush_bytes", flush_bytes, lo=0)
    for _ in range(warmup):
        run()
    method, fallback, body = "launches", None, None
    if capture is not None:
        try:
            replay = capture(calls)
            replay()  # one untimed replay: the graph is uploaded before the first batch
            body, method = replay, "cuda_graph"
        except Exception as exc:  # noqa: BLE001 - any capture failure falls back to plain launches, recorded
            fallback = f"{type(exc).__name__}: {exc}"[:300]
    if body is None:
        def body():
            for _ in range(calls):
                run()
    per_call = []
    for _ in range(batches):
        if flush is not None:
            flush()
        start, end = event(), event()
        start.record()
        body()
        end.record()
        end.synchronize()
        per_call.append(float(start.elapsed_time(end)) / calls)
    return BatchTiming(statistics.median(per_call), min(per_call), max(per_call), tuple(per_call), batches, calls,
                       warmup, method, fallback, flush_bytes)
