"""Bad inputs for the public ``samoyeds_lab.bench`` entry points and the bench helpers the CLI calls."""

from __future__ import annotations

import pytest

from samoyeds_lab.bench import environment_record, time_cpu
from samoyeds_lab.bench.cache import bench_cache, zipf_trace
from samoyeds_lab.bench.formats import bench_formats

from .harness import case, ids, run_case

noop = lambda: None  # noqa: E731

CASES = [
    case("bench.time_cpu", "fn not callable", lambda: time_cpu(3), TypeError, "fn"),
    case("bench.time_cpu", "fn None", lambda: time_cpu(None), TypeError, "fn"),
    case("bench.time_cpu", "repeat 0", lambda: time_cpu(noop, repeat=0), ValueError, "repeat"),
    case("bench.time_cpu", "repeat negative", lambda: time_cpu(noop, repeat=-2), ValueError, "repeat"),
    case("bench.time_cpu", "repeat float", lambda: time_cpu(noop, repeat=2.5), TypeError, "repeat"),
    case("bench.time_cpu", "repeat bool", lambda: time_cpu(noop, repeat=True), TypeError, "repeat"),
    case("bench.time_cpu", "warmup negative", lambda: time_cpu(noop, warmup=-1), ValueError, "warmup"),
    case("bench.environment_record", "a stray argument", lambda: environment_record(1), TypeError,
         "environment_record"),
    case("bench.formats.bench_formats", "rows 0", lambda: bench_formats(0, 128, repeat=1), ValueError, "rows"),
    case("bench.formats.bench_formats", "cols not a multiple of 128", lambda: bench_formats(8, 100, repeat=1),
         ValueError, "cols"),
    case("bench.formats.bench_formats", "repeat 0", lambda: bench_formats(8, 128, repeat=0), ValueError, "repeat"),
    case("bench.formats.bench_formats", "huge weight", lambda: bench_formats(1 << 24, 1 << 24, repeat=1),
         ValueError, "rows"),
    case("bench.cache.zipf_trace", "n 0", lambda: zipf_trace(0, 8), ValueError, "n"),
    case("bench.cache.zipf_trace", "alpha NaN", lambda: zipf_trace(10, 8, alpha=float("nan")), ValueError, "alpha"),
    case("bench.cache.zipf_trace", "huge n", lambda: zipf_trace(1 << 50, 8), ValueError, "n"),
    case("bench.cache.bench_cache", "repeat 0", lambda: bench_cache(100, 8, 4, repeat=0), ValueError, "repeat"),
    case("bench.cache.bench_cache", "capacity 0", lambda: bench_cache(100, 8, 0), ValueError, "capacity"),
    case("bench.cache.bench_cache", "unknown policy", lambda: bench_cache(100, 8, 4, policies=["mru"]),
         ValueError, "policies"),
    case("bench.cache.bench_cache", "policies a str", lambda: bench_cache(100, 8, 4, policies="lru"),
         TypeError, "policies"),
]


@pytest.mark.parametrize("c", CASES, ids=ids(CASES))
def test_bad_input(c):
    run_case(c)
