"""How quickly the labs answer (``samoyeds-lab bench panels``): panel updates and exercise checks, measured.

A slider that takes a second to redraw, or a ``check()`` that makes a learner wait, breaks the course as
surely as a wrong number — but a wall-clock bound inside a unit test fails whenever the machine is busy.
So the budgets live here, as a benchmark with recorded results: each case is timed ``repeat`` times (after
one untimed warm-up: numba compiles, plotly builds its templates), the median and range are recorded with
the budget, and the command exits non-zero when a median is over its budget.

Budgets (a 2-core laptop CPU, the labs' default sizes):

- ``SparsityPanel.update`` (Lab 01), every pattern × method at 64×128: 0.3 s;
- ``RoutingPanel.update`` (Lab 03) on the shipped traces, one change per control: 0.5 s;
- an exercise's ``check`` with its solution (Labs 05, 06, 08): 2 s for the pruning checks, 1 s for the
  caching and hot-set checks.
"""

from __future__ import annotations

import contextlib
import io
from typing import Callable

from .._checks import check_positive_int
from .timing import environment_record, time_cpu

__all__ = ["BUDGETS_S", "bench_responsiveness", "main"]

#: Budget (seconds, median) per case group.
BUDGETS_S: dict[str, float] = {"sparsity_panel": 0.3, "routing_panel": 0.5, "pruning_check": 2.0,
                               "caching_check": 1.0, "end_to_end_check": 1.0}


def _cases() -> list[tuple[str, str, Callable[[], object]]]:
    """``(group, name, fn)`` for every timed case; building panels happens here, outside the timing."""
    from ..exercises.caching import check_belady_hits, check_lru_hits, solution_belady_hits, solution_lru_hits
    from ..exercises.end_to_end import check_hot_set, solution_hot_set
    from ..exercises.pruning import check_samoyeds_mask, check_wanda_mask, solution_samoyeds_mask, solution_wanda_mask
    from ..routing.ship import load_shipped_trace
    from ..viz import METHODS, PATTERNS, SparsityPanel
    from ..viz.routing_panel import RoutingPanel

    out: list[tuple[str, str, Callable[[], object]]] = []
    sp = SparsityPanel(seed=0)
    sp.update(rows=64, cols=128)
    for pattern in PATTERNS:
        for method in METHODS:
            out.append(("sparsity_panel", f"{pattern} · {method}",
                        lambda p=pattern, m=method: sp.update(pattern=p, method=m)))
    traces = {d: load_shipped_trace(d) for d in ("en", "de", "code")}
    rp = RoutingPanel(traces)
    rp.update()
    home = rp.values()
    offered = rp.options(home["trace"])
    for key in ("sequence", "offset", "batch", "layer", "view"):  # each control to another value it offers
        other = [v for v in offered.get(key, ()) if v != home[key]]
        if not other:
            continue
        kw = {key: other[0]}
        name = f"{key}={other[0]}"

        def step(kw=kw):
            rp.update(**kw)
            rp.update(**{k: home[k] for k in kw})  # back, so every repeat changes something

        out.append(("routing_panel", f"{name} (and back)", step))
    quiet = contextlib.redirect_stdout(io.StringIO())  # the checks print their report
    for group, check, sol in (("pruning_check", check_wanda_mask, solution_wanda_mask),
                              ("pruning_check", check_samoyeds_mask, solution_samoyeds_mask),
                              ("caching_check", check_lru_hits, solution_lru_hits),
                              ("caching_check", check_belady_hits, solution_belady_hits),
                              ("end_to_end_check", check_hot_set, solution_hot_set)):
        def run(check=check, sol=sol):
            with quiet:
                if not check(sol):
                    raise AssertionError(f"{check.__name__}: the package's solution failed its own check")

        out.append((group, f"{check.__name__}({sol.__name__})", run))
    return out


def bench_responsiveness(*, repeat: int = 3, groups: tuple[str, ...] | None = None) -> list[dict]:
    """Time every case (median of ``repeat`` after one warm-up); one record per case with its budget.

    Records: ``group``, ``case``, ``median_s``/``min_s``/``max_s``, ``budget_s``, ``within_budget`` and the
    environment stamp (CPU, threads, versions, date).
    """
    repeat = check_positive_int("repeat", repeat)
    if groups is not None:
        bad = [g for g in groups if g not in BUDGETS_S]
        if bad:
            raise ValueError(f"groups: expected names from {sorted(BUDGETS_S)}, got {bad}")
    env = environment_record()
    out = []
    for group, name, fn in _cases():
        if groups is not None and group not in groups:
            continue
        t = time_cpu(fn, repeat=repeat, warmup=1)
        out.append({**env, "op": "lab responsiveness", "group": group, "case": name, **t,
                    "budget_s": BUDGETS_S[group], "within_budget": t["median_s"] <= BUDGETS_S[group]})
    return out


def main(argv: list[str] | None = None) -> int:
    """``samoyeds-lab bench panels [--repeat N] [--out FILE]``: exit 1 if a median is over its budget."""
    import json
    import sys

    from .._checkpoint import check_out_path
    from .._cli import OneLineParser, int_type, run_command

    prog = "samoyeds-lab bench panels"
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = OneLineParser(prog=prog, description="time the labs' panel updates and exercise checks against "
                                                  "their budgets")
    parser.add_argument("--repeat", type=int_type("--repeat", 1, 100), default=3, help="timed runs per case")
    parser.add_argument("--out", help="write the records as JSON here (e.g. data/bench/cpu_responsiveness.json)")
    args = parser.parse_args(argv)

    def body() -> int:
        if args.out:
            check_out_path("--out", args.out)
        records = bench_responsiveness(repeat=args.repeat)
        for r in records:
            mark = "ok  " if r["within_budget"] else "SLOW"
            print(f"{mark} {r['group']:17s} {r['case']:44s} median {r['median_s'] * 1e3:7.1f} ms "
                  f"[{r['min_s'] * 1e3:.1f}–{r['max_s'] * 1e3:.1f}]  budget {r['budget_s'] * 1e3:.0f} ms")
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"records": records}, f, indent=1)
                f.write("\n")
            print(f"wrote {args.out} ({len(records)} records)")
        slow = [r for r in records if not r["within_budget"]]
        if slow:
            print(f"{prog}: {len(slow)} case(s) over budget (a busy machine? rerun when it is quiet)", file=sys.stderr)
        return 1 if slow else 0

    return run_command(prog, body, argv, parser)
