"""CPU time to prune one expert with second-order (OBS) pruning, pattern by pattern.

``python -m samoyeds_lab.bench.prune_time`` prunes a Mixtral-shaped gate/up expert (14336 x 4096, bf16)
with :func:`samoyeds_lab.prune.obs.obs_prune` on 512 calibration tokens, once per pattern (Samoyeds 1:2
at V=128 and 2:4 by default), and prints one record per pattern: wall time of the whole call, of the
Hessian + inverse factorisation alone, the density reached, and the machine's 1-minute load average
before and after (other jobs on the machine make any CPU time meaningless; the record says so rather
than hiding it). One run each: pruning is a one-off cost, not a hot path.
"""

from __future__ import annotations

import os
import time
from typing import Sequence

import torch

from .._checks import check_int
from .timing import environment_record

#: Default expert shape (Mixtral-8x7B w1/w3) and calibration size.
ROWS, COLS, TOKENS = 14336, 4096, 512
#: Default patterns: (label, pattern, kwargs).
PATTERNS = (("samoyeds-1:2-v128", "samoyeds", {"n": 1, "m": 2, "vector": 128}), ("2:4", "2:4", {}))


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # pragma: no cover - not on every OS
        return None


def time_obs_prune(
    rows: int = ROWS,
    cols: int = COLS,
    tokens: int = TOKENS,
    patterns: Sequence[tuple[str, str, dict]] = PATTERNS,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.bfloat16,
    nthreads: int | None = None,
) -> list[dict[str, object]]:
    """Time :func:`~samoyeds_lab.prune.obs.obs_prune` once per pattern on a random expert.

    Parameters
    ----------
    rows, cols : int
        Expert weight shape ``[rows, cols]`` (``Y = X Wᵀ``).
    tokens : int
        Calibration tokens (Gaussian inputs).
    patterns : sequence of (label, pattern, kwargs)
        What to prune to.
    seed : int
        Seed of the weight and inputs.
    dtype : torch.dtype
        Weight and input dtype (the pruning math is fp32 either way).
    nthreads : int, optional
        torch threads for the run (restored afterwards); default: as set. NOTE: the sweep issues some
        ten thousand small operations; on a machine whose cores are busy with other jobs, one thread
        can be faster than two (a descheduled worker stalls every parallel operation).

    Returns
    -------
    list of dict
        One record per pattern: ``label``, ``pattern``, ``kwargs``, ``shape``, ``tokens``, ``dtype``,
        ``seconds`` (wall time of the whole call), ``cpu_seconds`` (this process's CPU time over its
        threads during the call), ``factor_seconds`` (Hessian and inverse factors only, measured once,
        separately), ``density``, ``load_before``/``load_after`` (1-minute load average) and the
        environment (its ``threads`` is the count used).
    """
    rows = check_int("rows", rows, lo=1)
    cols = check_int("cols", cols, lo=1)
    tokens = check_int("tokens", tokens, lo=1)
    old_threads = torch.get_num_threads()
    if nthreads is not None:
        torch.set_num_threads(check_int("nthreads", nthreads, lo=1, hi=1024))
    try:
        return _run(rows, cols, tokens, patterns, seed, dtype)
    finally:
        torch.set_num_threads(old_threads)


def _run(rows, cols, tokens, patterns, seed, dtype) -> list[dict[str, object]]:
    from ..prune import obs as _obs

    g = torch.Generator().manual_seed(check_int("seed", seed, lo=0))
    w = torch.randn(rows, cols, generator=g).to(dtype)
    x = torch.randn(tokens, cols, generator=g).to(dtype)
    env = environment_record()
    t = time.perf_counter()
    _obs._prepare(w, x, None, 0.01)
    factor = time.perf_counter() - t
    out = []
    for label, pattern, kwargs in patterns:
        before = _load()
        t, cpu = time.perf_counter(), time.process_time()
        _, mask = _obs.obs_prune(w, x, pattern, **kwargs)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        out.append({
            "label": label, "pattern": pattern, "kwargs": dict(kwargs), "shape": [rows, cols], "tokens": tokens,
            "dtype": str(dtype).replace("torch.", ""), "seconds": seconds, "cpu_seconds": cpu,
            "factor_seconds": factor,
            "density": float(mask.float().mean()), "load_before": before, "load_after": _load(), **env,
        })
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m samoyeds_lab.bench.prune_time [--size ROWS COLS] [--tokens N] [--out FILE]``."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m samoyeds_lab.bench.prune_time", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", nargs=2, type=int, default=[ROWS, COLS], metavar=("ROWS", "COLS"))
    p.add_argument("--tokens", type=int, default=TOKENS)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: as set)")
    p.add_argument("--out", default=None, help="write the records as JSON here")
    args = p.parse_args(argv)
    records = time_obs_prune(args.size[0], args.size[1], args.tokens, nthreads=args.threads)
    for r in records:
        print(f"{r['label']:>20}  {r['seconds']:7.1f} s wall  {r['cpu_seconds']:7.1f} s CPU  (Hessian+factors {r['factor_seconds']:.1f} s)  "
              f"density {r['density']:.3f}  load {r['load_before']} -> {r['load_after']}  [{r['device']}]")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(records, f, indent=1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
