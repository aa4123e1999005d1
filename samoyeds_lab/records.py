"""Recorded GPU kernel benchmarks (``data/bench/gpu_kernels*.json``): the schema, a validator, a reader.

This module sits below both :mod:`samoyeds_lab.kernels` (whose ``kernel="auto"`` choice reads the records)
and :mod:`samoyeds_lab.bench` (which writes them), so neither has to import the other. It needs only the
standard library and :mod:`samoyeds_lab.errors`. :func:`samoyeds_lab.bench.kernels.make_record` adds the
roofline ceiling (which needs :mod:`samoyeds_lab.bench.roofline`) and calls :func:`build_record`.

A record is one dict per (model, op, tokens, dtype) with the keys :data:`RECORD_KEYS`: ``device, driver,
versions, op, model, m, k, tokens, dtype, ms, baseline, baseline_ms, tflops, roofline_ms, date``;
``tflops = 2·m·k·tokens / ms`` counts real tokens only (never padding).
"""

from __future__ import annotations

import datetime as _dt
import glob
import json
import os
from pathlib import Path

from .errors import CorruptFileError

#: ``ssmm_wg`` (the sm_90a wgmma variant of ``ssmm``), ``ssmm_decode`` (``kernel="decode"``, timed at <= 64
#: tokens) and ``ssmm_prefill`` (``kernel="wgmma_prefill"``, Hopper only, timed at >= 128 tokens) are also
#: timed against ``ssmm`` itself: those records are what ``kernel="auto"`` decides from
#: (``kernels.ops.choose_ssmm_kernel``, ``kernels.decode``).
OPS = ("ssmm", "ssmm_wg", "ssmm_decode", "ssmm_prefill", "spmm_24", "dense_mm")
#: What an op can be timed against.
BASELINES = ("torch_dense", "torch_24", "dense_mm", "ssmm")
#: The keys every record has.
RECORD_KEYS = ("device", "driver", "versions", "op", "model", "m", "k", "tokens", "dtype", "ms", "baseline",
               "baseline_ms", "tflops", "roofline_ms", "date")
#: Where the recorded benchmarks live (``<repo>/data/bench``).
BENCH_DIR = Path(__file__).resolve().parents[1] / "data" / "bench"


def validate_record(rec: object) -> dict:
    """Check one record against the schema and return it.

    Raises
    ------
    CorruptFileError
        Naming the first bad field (missing keys, a negative or non-numeric size/time, an unknown op,
        baseline or dtype).
    """
    if not isinstance(rec, dict):
        raise CorruptFileError(f"record: expected a dict, got {type(rec).__name__}")
    missing = [k for k in RECORD_KEYS if k not in rec]
    if missing:
        raise CorruptFileError(f"record: missing keys {missing}")
    for k in ("m", "k", "tokens"):
        if not isinstance(rec[k], int) or isinstance(rec[k], bool) or rec[k] < 0:
            raise CorruptFileError(f"record: {k} must be a non-negative int, got {rec[k]!r}")
    for k in ("ms", "baseline_ms", "tflops", "roofline_ms"):
        if not isinstance(rec[k], (int, float)) or isinstance(rec[k], bool) or not rec[k] >= 0:
            raise CorruptFileError(f"record: {k} must be a non-negative number, got {rec[k]!r}")
    if rec["op"] not in OPS or rec["baseline"] not in BASELINES:
        raise CorruptFileError(f"record: op/baseline must be in {OPS}/{BASELINES}, got {rec['op']!r}/{rec['baseline']!r}")
    if rec["dtype"] not in ("float16", "bfloat16"):
        raise CorruptFileError(f"record: dtype must be float16 or bfloat16, got {rec['dtype']!r}")
    return rec


def build_record(*, device: str, driver: str, versions: dict, op: str, model: str, m: int, k: int, tokens: int,
                 dtype: str, ms: float, baseline: str, baseline_ms: float, roofline_ms: float,
                 date: str | None = None) -> dict:
    """One validated record from its measured parts; ``tflops = 2·m·k·tokens / ms`` (real tokens only).

    ``roofline_ms`` is given here (the bench computes it with :mod:`samoyeds_lab.bench.roofline`);
    ``date`` defaults to today (ISO format).
    """
    rec = {
        "device": device, "driver": driver, "versions": dict(versions), "op": op, "model": model, "m": int(m),
        "k": int(k), "tokens": int(tokens), "dtype": dtype, "ms": float(ms), "baseline": baseline,
        "baseline_ms": float(baseline_ms), "tflops": 2.0 * m * k * tokens / (float(ms) * 1e-3) / 1e12,
        "roofline_ms": float(roofline_ms), "date": date or _dt.date.today().isoformat(),
    }
    return validate_record(rec)


def load_kernel_records(path: str | os.PathLike | None = None) -> list[dict]:
    """Records from ``path`` (a JSON list, or a dict with ``"records"``) or from every
    ``data/bench/gpu_kernels*.json``; ``[]`` when there are none.

    Raises
    ------
    FileNotFoundError
        When an explicit ``path`` does not exist.
    CorruptFileError
        When a file does not hold a list of valid records.
    """
    if path is not None:
        files = [Path(path)]
    else:
        files = sorted(Path(p) for p in glob.glob(str(BENCH_DIR / "gpu_kernels*.json")))
    out: list[dict] = []
    for f in files:
        if not f.exists():
            if path is not None:
                raise FileNotFoundError(f"path: {f} does not exist")
            continue
        data = json.loads(f.read_text())
        recs = data.get("records", data) if isinstance(data, dict) else data
        if not isinstance(recs, list):
            raise CorruptFileError(f"{f}: expected a list of records")
        out.extend(validate_record(r) for r in recs)
    return out


__all__ = ["OPS", "BASELINES", "RECORD_KEYS", "BENCH_DIR", "validate_record", "build_record", "load_kernel_records"]
