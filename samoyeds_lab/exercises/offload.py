"""Self-checking exercises for Lab 07 (MoNDE near-data experts): the two path times and their crossover.

Exercise 1 — :func:`check_path_times`: ``fn(n, P, d, gpu, near, link_gbs) -> (t_gpu_s, t_near_s)``, the
time of one expert on ``n`` tokens when its weights move to the GPU, and when the activations move to
where the weights live (the cost model's :func:`~samoyeds_lab.offload.cost.gpu_path_cost` and
:func:`~samoyeds_lab.offload.cost.near_data_path_cost`, fp16, weights not resident, no overlap).

Exercise 2 — :func:`check_crossover`: ``fn(P, d, gpu, near, link_gbs) -> n*``, the smallest token count
(1 … 65536) from which moving the weights is no slower, or ``None``
(:func:`~samoyeds_lab.offload.cost.crossover_tokens`).

Solutions: :func:`solution_path_times`, :func:`solution_crossover` (look after trying).
"""

from __future__ import annotations

from typing import Callable

from .sparsity import _NO, _OK, _call, _not_callable

__all__ = ["check_crossover", "check_path_times", "solution_crossover", "solution_path_times", "CASES"]

#: (expert params P, d_model, GPU profile, near profile, link GB/s): Mixtral-8x7B and a small expert.
CASES = (
    (3 * 4096 * 14336, 4096, "h100_pcie", "cxl_ndp_monde", 64.0),
    (3 * 4096 * 14336, 4096, "h100_pcie", "host_ddr5", 32.0),
    (3 * 2048 * 1408, 2048, "rtx_4090", "host_ddr5", 32.0),
)
MAX_TOKENS = 1 << 16


def solution_path_times(n: int, P: float, d: int, gpu, near, link_gbs: float) -> tuple[float, float]:
    """Seconds: GPU path = P·2/link + max(2nP/F_gpu, P·2/B_gpu); near path = 2·n·d·2/link + max(P·2/B_near, 2nP/F_near)."""
    b = 2.0
    t_gpu = P * b / (link_gbs * 1e9) + max(2 * n * P / (gpu.fp16_tflops * 1e12), P * b / (gpu.memory_bandwidth_gbs * 1e9))
    t_near = (2 * n * d * b / (link_gbs * 1e9)
              + max(P * b / (near.memory_bandwidth_gbs * 1e9), 2 * n * P / (near.fp16_tflops * 1e12)))
    return t_gpu, t_near


def solution_crossover(P: float, d: int, gpu, near, link_gbs: float) -> int | None:
    """Smallest n in 1..65536 with t_gpu(n) <= t_near(n) (both path times grow linearly: bisect), else None."""
    lo, hi = 1, MAX_TOKENS
    def gpu_wins(n: int) -> bool:
        a, b = solution_path_times(n, P, d, gpu, near, link_gbs)
        return a <= b
    if not gpu_wins(hi):
        return None
    while lo < hi:  # the GPU path's slope is the smaller one, so "GPU wins" stays true once it is
        mid = (lo + hi) // 2
        if gpu_wins(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _profiles(gname: str, nname: str):
    from ..offload.hardware import load_profile

    return load_profile(gname), load_profile(nname)


def check_path_times(fn: Callable[..., object]) -> bool:
    """Check ``fn(n, P, d, gpu, near, link_gbs) -> (t_gpu_s, t_near_s)`` against the cost model.

    Spec (fp16: 2 bytes per weight and per activation; ``gpu``/``near`` are
    :class:`~samoyeds_lab.offload.hardware.HardwareProfile` with ``fp16_tflops`` and ``memory_bandwidth_gbs``)::

        t_gpu  = P·2 / link  +  max(2·n·P / F_gpu,  P·2 / B_gpu)          move the weights, then compute
        t_near = 2·n·d·2 / link  +  max(P·2 / B_near,  2·n·P / F_near)     activations there and back, compute
    """
    from ..offload.cost import gpu_path_cost, near_data_path_cost

    _not_callable("fn", fn)
    for P, d, gname, nname, link in CASES:
        gpu, near = _profiles(gname, nname)
        for n in (1, 16, 128, 1024):
            exp = (float(gpu_path_cost(n, P, gpu, link=link).total),
                   float(near_data_path_cost(n, P, near, d_model=d, link=link).total))
            got, err = _call(fn, n, P, d, gpu, near, link)
            if err:
                print(f"{_NO} {err}")
                return False
            try:
                mine = tuple(float(v) for v in got)  # type: ignore[union-attr]
            except (TypeError, ValueError):
                mine = ()
            if len(mine) != 2:
                print(f"{_NO} not yet solved: expected a pair (t_gpu_s, t_near_s), got {got!r}")
                return False
            ok = [abs(a - b) <= 1e-6 * b for a, b in zip(mine, exp)]
            if all(ok):
                continue
            print(f"{_NO} n={n}, P={P:.3g}, d={d}, {gname} + {nname}, link {link} GB/s:")
            for name, a, b, good in zip(("t_gpu ms", "t_near ms"), mine, exp, ok):
                print(f"  {name:<10} yours {1e3 * a:10.4f}   expected {1e3 * b:10.4f}   {'.' if good else 'X'}")
            print("hint: TFLOP/s are 1e12 FLOP/s and GB/s 1e9 B/s; an expert on n tokens is 2·n·P FLOP; the "
                  "near path moves 2·n·d activations (in and out), the GPU path P weights.")
            return False
    print(f"{_OK} solved: your path times match the cost model on {len(CASES) * 4} cases.")
    return True


def check_crossover(fn: Callable[..., object]) -> bool:
    """Check ``fn(P, d, gpu, near, link_gbs) -> n*`` (int in 1..65536, or None) against
    :func:`~samoyeds_lab.offload.cost.crossover_tokens`."""
    from ..offload.cost import crossover_tokens

    _not_callable("fn", fn)
    for P, d, gname, nname, link in CASES:
        gpu, near = _profiles(gname, nname)
        exp = crossover_tokens(gpu, near, P, d_model=d, link=link, max_tokens=MAX_TOKENS)
        got, err = _call(fn, P, d, gpu, near, link)
        if err:
            print(f"{_NO} {err}")
            return False
        if got != exp:
            print(f"{_NO} {gname} + {nname}, link {link} GB/s: yours n* = {got!r}, expected {exp!r}")
            if isinstance(got, int) and exp is not None:
                print("  (X) " + ("too early: near data is still faster there" if got < exp
                                  else "too late: the GPU path already wins earlier"))
            print("hint: find the first n where t_gpu(n) <= t_near(n); both grow with n, the near path faster, "
                  "so a bisection over 1..65536 works (or solve the linear pieces).")
            return False
    print(f"{_OK} solved: your n* matches the cost model's crossover for all {len(CASES)} cases.")
    return True
