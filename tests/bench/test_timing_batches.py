"""The GPU timing loop's bookkeeping (:func:`samoyeds_lab.bench.timing.time_batches`) with fake events and a
fake clock, and the kernel-bench sweep / CLI record handling on the CPU (reference backend, no time recorded).

The fake clock advances by a known amount per timed call and by a large amount per L2 flush; events read
the clock when recorded, so a per-call time that included the flush, counted the warm-up, or divided by
the wrong number of calls would come out wrong.
"""

from __future__ import annotations

import json

import pytest

from samoyeds_lab.bench import _kernels_gpu as kg
from samoyeds_lab.bench import kernels as bk
from samoyeds_lab.bench.timing import TIMING_METHODS, BatchTiming, time_batches
from samoyeds_lab.records import load_kernel_records, validate_record


class Clock:
    def __init__(self):
        self.now = 0.0  # ms
        self.log: list[str] = []


class FakeEvent:
    def __init__(self, clock):
        self.clock, self.t, self.synced = clock, None, False

    def record(self):
        self.t = self.clock.now
        self.clock.log.append("record")

    def synchronize(self):
        self.synced = True

    def elapsed_time(self, other):
        assert other.synced and self.t is not None and other.t is not None
        return other.t - self.t


def _setup(costs):
    """A clock, run() costing costs[i] ms on its i-th call (cycled), a flush costing 1000 ms."""
    clock = Clock()
    n = {"run": 0, "flush": 0}

    def run():
        clock.now += costs[n["run"] % len(costs)]
        n["run"] += 1
        clock.log.append("run")

    def flush():
        clock.now += 1000.0
        n["flush"] += 1
        clock.log.append("flush")

    return clock, n, run, flush, (lambda: FakeEvent(clock))


@pytest.mark.parametrize("calls,batches,warmup", [(1, 1, 0), (5, 3, 2), (20, 7, 3), (3, 4, 0)])
def test_per_call_times_exclude_flush_and_warmup(calls, batches, warmup):
    clock, n, run, flush, event = _setup([0.5])
    t = time_batches(run, event=event, calls=calls, batches=batches, warmup=warmup, flush=flush, flush_bytes=123)
    assert isinstance(t, BatchTiming)
    assert n["run"] == warmup + calls * batches and n["flush"] == batches
    assert t.median_ms == pytest.approx(0.5) and t.min_ms == pytest.approx(0.5) and t.max_ms == pytest.approx(0.5)
    assert (t.batches, t.calls_per_batch, t.warmup, t.method, t.fallback, t.flush_bytes) == \
        (batches, calls, warmup, "launches", None, 123)
    # every batch: flush, then the start event, the calls, the end event
    body = clock.log[warmup:]
    assert body == (["flush", "record"] + ["run"] * calls + ["record"]) * batches


def test_median_min_max_over_batches():
    # 2 calls per batch; batch costs 2·1, 2·3, 2·2 → per-call 1, 3, 2 (after one warm-up call costing 9)
    clock, n, run, flush, event = _setup([9, 1, 1, 3, 3, 2, 2])
    t = time_batches(run, event=event, calls=2, batches=3, warmup=1, flush=flush)
    assert t.per_batch_ms == (1.0, 3.0, 2.0)
    assert (t.median_ms, t.min_ms, t.max_ms) == (2.0, 1.0, 3.0)


def test_graph_capture_replaces_the_calls():
    clock, n, run, flush, event = _setup([0.25])
    replays = []

    def capture(calls):
        def replay():
            clock.now += 0.1 * calls  # a graph of `calls` runs, cheaper than launching them one by one
            replays.append(calls)
        return replay

    t = time_batches(run, event=event, calls=10, batches=4, warmup=2, flush=flush, capture=capture)
    assert t.method == "cuda_graph" and t.fallback is None
    assert replays == [10] * 5  # one untimed upload replay + one per batch
    assert n["run"] == 2  # only the warm-up ran outside the graph
    assert t.median_ms == pytest.approx(0.1)


def test_failed_capture_falls_back_to_launches_and_says_why():
    clock, n, run, flush, event = _setup([0.5])

    def capture(calls):
        raise RuntimeError("operation not permitted when stream is capturing")

    t = time_batches(run, event=event, calls=4, batches=2, warmup=0, capture=capture)
    assert t.method == "launches" and "RuntimeError: operation not permitted" in t.fallback
    assert n["run"] == 8 and t.median_ms == pytest.approx(0.5)
    assert set(TIMING_METHODS) == {"cuda_graph", "launches"}
    d = t.as_dict()
    assert d["per_batch_ms"] == [0.5, 0.5] and json.dumps(d)


@pytest.mark.parametrize("kw,err,what", [
    (dict(calls=0), ValueError, "calls"),
    (dict(batches=0), ValueError, "batches"),
    (dict(warmup=-1), ValueError, "warmup"),
    (dict(calls=2.5), TypeError, "calls"),
    (dict(flush=3), TypeError, "flush: expected a callable or None"),
    (dict(capture="graph"), TypeError, "capture: expected a callable or None"),
    (dict(event=None), TypeError, "event: expected a callable"),
    (dict(flush_bytes=-5), ValueError, "flush_bytes"),
])
def test_bad_arguments_are_named(kw, err, what):
    clock, n, run, flush, event = _setup([1.0])
    args = dict(event=event) | kw
    with pytest.raises(err, match=what):
        time_batches(run, **args)
    assert n["run"] == 0


def test_run_must_be_callable():
    with pytest.raises(TypeError, match="run: expected a callable"):
        time_batches(None, event=lambda: None)


# ------------------------------------------------------------------ the sweep: records, failures, sink
H100 = "h100_sxm"
ID = {"device": "SYNTHETIC", "driver": "0", "versions": {}}


def _sweep(**kw):
    clock = iter(range(1, 10_000))
    args = dict(profile=H100, ops=("ssmm", "dense_mm"), time_fn=lambda fn: float(next(clock)), device="cpu",
                backend="reference", hopper=False, identity=ID)
    args.update(kw)
    return kg.sweep({"tiny": (256, 512)}, (1, 8), "bfloat16", **args)


def test_sweep_w1_and_w2_kernel_and_op_times_and_sink():
    seen = []
    recs = _sweep(projections=("w1", "w2"), op_time_fn=lambda fn: 0.5, sink=seen.append, notes={"l2_flush": "x"})
    assert seen == recs
    shapes = {(r["projection"], r["m"], r["k"]) for r in recs}
    assert shapes == {("w1", 512, 256), ("w2", 256, 512)}
    for r in recs:
        validate_record(r)
        assert r["status"] == "ok" and r["op_ms"] == 0.5 and r["baseline_op_ms"] == 0.5 and r["l2_flush"] == "x"
        assert r["kernel_timed"] == "call"  # the reference backend has no launch plan
        assert set(r["timing"]) == {"kernel", "op", "baseline_kernel", "baseline_op"}
    assert len({r["ms"] for r in recs}) > 1  # kernel times come from time_fn, not op_time_fn


def test_sweep_records_a_failing_config_and_goes_on(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("CUDA_ERROR_LAUNCH_FAILED")

    monkeypatch.setattr(kg, "dense_mm", boom)
    recs = _sweep(projections=("w1",))
    by = {(r["op"], r["baseline"], r["tokens"]): r for r in recs}
    for t in (1, 8):
        assert by[("dense_mm", "torch_dense", t)]["status"] == "failed"
        assert "CUDA_ERROR_LAUNCH_FAILED" in by[("dense_mm", "torch_dense", t)]["reason"]
        # ssmm vs the failed dense_mm baseline: failed, with ssmm's own time kept
        r = by[("ssmm", "dense_mm", t)]
        assert r["status"] == "failed" and r["reason"].startswith("baseline dense_mm failed")
        assert r["ms"] == r["baseline_ms"] == r["tflops"] == 0 and r["timed_ms"] > 0 and r["timed_baseline_ms"] == 0
        assert by[("ssmm", "torch_dense", t)]["status"] == "ok"


def test_sweep_refuses_unknown_projection():
    with pytest.raises(ValueError, match="projections: expected a subset of"):
        _sweep(projections=("w3",))


def test_failed_records_are_read_back_and_skipped_by_the_auto_choice(tmp_path):
    from samoyeds_lab.kernels.ops import choose_ssmm_kernel

    rec = kg.failed_record(op="ssmm_wg", baseline="ssmm", model="m", m=512, k=256, tokens=8, dtype="bfloat16",
                           reason="KernelMismatchError: ...", profile=H100, identity=ID)
    assert rec["status"] == "failed" and rec["tflops"] == 0 and rec["ms"] == 0
    path = tmp_path / "gpu_kernels_x.json"
    path.write_text(json.dumps({"records": [rec]}))
    assert load_kernel_records(path) == [rec]
    assert choose_ssmm_kernel(8, "bfloat16", "SYNTHETIC", [rec]) == "mma_sp"
    # an op that failed against a baseline that was timed: still never read as a measurement
    half = kg.failed_record(op="ssmm_wg", baseline="ssmm", model="m", m=512, k=256, tokens=8, dtype="bfloat16",
                            reason="launch failed", profile=H100, identity=ID, baseline_ms=0.02)
    assert half["ms"] == half["baseline_ms"] == 0 and half["timed_baseline_ms"] == 0.02
    assert choose_ssmm_kernel(8, "bfloat16", "SYNTHETIC", [half]) == "mma_sp"
    ok = dict(half, status="ok", ms=0.01, baseline_ms=0.02)
    assert choose_ssmm_kernel(8, "bfloat16", "SYNTHETIC", [ok]) == "wgmma_sp"
    assert choose_ssmm_kernel(8, "bfloat16", "SYNTHETIC", [dict(ok, status="failed")]) == "mma_sp"


# ------------------------------------------------------------------ the CLI writes the file after every record
def test_main_rewrites_the_file_after_each_record(monkeypatch, tmp_path, capsys):
    out = tmp_path / "gpu_kernels_test.json"
    seen = []

    def fake_bench(shapes, tokens, dtype, *, profile, warmup, repeat, ops, projections, calls, graphs, sink):
        seen.append((tuple(shapes), tokens, dtype, ops, projections, calls, graphs, repeat, warmup))
        recs = _sweep(projections=projections)
        for i, r in enumerate(recs):
            sink(r)
            on_disk = load_kernel_records(out)  # readable after every single record
            assert len(on_disk) == len(calls_so_far) + i + 1
        calls_so_far.extend(recs)
        return recs

    calls_so_far: list = []
    monkeypatch.setattr(bk, "run_kernel_bench", fake_bench)
    rc = bk.main(["--tokens", "1", "8", "--dtypes", "bfloat16", "float16", "--ops", "ssmm", "--calls", "7",
                  "--batches", "3", "--no-graphs", "--out", str(out)])
    assert rc == 0
    assert [c[2] for c in seen] == ["bfloat16", "float16"]
    assert all(c[0] == ("Mixtral-8x7B",) and c[1] == (1, 8) and c[3] == ("ssmm",) and c[4] == ("w1", "w2")
               and c[5] == 7 and c[6] is False and c[7] == 3 for c in seen)
    assert len(load_kernel_records(out)) == len(calls_so_far)
    assert "records (0 failed)" in capsys.readouterr().out


def test_main_keeps_the_records_made_before_a_crash(monkeypatch, tmp_path):
    out = tmp_path / "gpu_kernels_crash.json"

    def fake_bench(shapes, tokens, dtype, *, sink, **kw):
        recs = _sweep(projections=("w1",))
        sink(recs[0])
        sink(recs[1])
        raise RuntimeError("the GPU went away")

    monkeypatch.setattr(bk, "run_kernel_bench", fake_bench)
    assert bk.main(["--out", str(out)]) != 0
    assert len(load_kernel_records(out)) == 2


@pytest.mark.parametrize("argv,what", [
    (["--dtypes", "float32"], "--dtype"),
    (["--ops", "gemm"], "--ops"),
    (["--projections", "w3"], "--projections"),
    (["--calls", "0"], "--calls"),
    (["--batches", "0"], "--batches"),
])
def test_main_bad_flags_are_named(argv, what, capsys):
    with pytest.raises(SystemExit) as exc:
        bk.main(argv)
    assert exc.value.code == 2
    assert what in capsys.readouterr().err


# ------------------------------------------------------------------ on the CuPy backend the kernel time is a plan's
from tests.kernels.test_plan import fake_cupy  # noqa: E402,F401 - the counting fake CuPy fixture


def test_cupy_sweep_times_launch_plans_and_the_ops_separately(fake_cupy, monkeypatch):
    from samoyeds_lab.kernels.plan import KernelPlan

    monkeypatch.setattr(kg, "_check", lambda *a, **k: None)  # the fake kernels compute nothing
    kernels, op_fns = [], []

    def time_kernel(k):
        kernels.append(k)
        if isinstance(k, KernelPlan):
            before = fake_cupy.calls["launch"]
            k.run()
            assert fake_cupy.calls["launch"] - before == k.launches_per_run
        return 1.0

    recs = kg.sweep({"tiny": (256, 512)}, (8,), "float16", profile=H100, ops=("ssmm", "spmm_24", "dense_mm"),
                    time_fn=time_kernel, op_time_fn=lambda fn: op_fns.append(fn) or 2.0, device="cpu", backend="cupy",
                    hopper=False, identity=ID, projections=("w1",))
    plans = [k for k in kernels if isinstance(k, KernelPlan)]
    assert sorted(p.op for p in plans) == ["dense_mm", "spmm", "ssmm"]
    assert len(op_fns) == len(kernels) == 4  # + torch_dense (a torch call, no plan); torch_24 needs CUDA
    by = {r["op"]: r for r in recs if r["baseline"] == "torch_dense"}
    assert {op: r["kernel_timed"] for op, r in by.items()} == {"ssmm": "plan", "spmm_24": "plan", "dense_mm": "plan"}
    assert all(r["status"] == "ok" and r["ms"] == 1.0 and r["op_ms"] == 2.0 and r["baseline_kernel_timed"] == "call"
               for r in by.values())
