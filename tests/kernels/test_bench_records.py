"""Record builder, roofline math and schema validation of samoyeds_lab.bench.kernels with SYNTHETIC timings
(nothing here is a measurement and nothing is written to data/)."""

from __future__ import annotations

import json

import torch

import pytest

from samoyeds_lab.bench import kernels as bk
from samoyeds_lab.errors import CorruptFileError

from samoyeds_lab.bench import roofline as rl

H100 = "h100_sxm"


def test_bytes_ratios_match_the_paper():
    m, k = 14336, 4096
    assert bk.op_bytes("dense_mm", m, k, 0) == 0  # an expert without tokens is skipped: nothing is read
    dense = bk.op_bytes("dense_mm", m, k, 1)
    assert bk.op_bytes("spmm_24", m, k, 1) / dense == pytest.approx(0.5625, rel=1e-3)  # ≈56%
    assert 0.27 < bk.op_bytes("ssmm", m, k, 1) / dense < 0.29  # ≈28% with uint8 row indices
    for op, rop in bk.ROOFLINE_OP.items():  # one formula: the one Lab 02 plots
        assert bk.op_bytes(op, m, k, 16) == rl.op_bytes(rop, m, k, 16)["total"]
    with pytest.raises(ValueError, match="op"):
        bk.op_bytes("nope", 1, 1, 1)


def test_roofline_decode_is_memory_bound_and_prefill_compute_bound():
    m, k = 14336, 4096
    ms = bk.roofline_ms("torch_dense", m, k, 1, H100)
    assert ms == pytest.approx(bk.op_bytes("torch_dense", m, k, 1) / 3350e9 * 1e3)
    big = bk.roofline_ms("ssmm", m, k, 1 << 20, H100)
    # Samoyeds computes only its kept quarter of the values: half the rows, at the 2:4 SpTC peak
    assert big == pytest.approx(rl.roofline("ssmm", m, k, 1 << 20, H100).time_s * 1e3)
    assert rl.roofline("ssmm", m, k, 1 << 20, H100).bound == "compute"


def test_make_record_and_round_trip(tmp_path):
    rec = bk.make_record(device="SYNTHETIC", driver="0", versions={"torch": "x"}, op="ssmm", model="Mixtral-8x7B",
                         m=14336, k=4096, tokens=16, dtype="float16", ms=0.5, baseline="torch_dense",
                         baseline_ms=1.0, profile=H100, date="2026-01-01")
    assert set(rec) == set(bk.RECORD_KEYS)
    assert rec["tflops"] == pytest.approx(2 * 14336 * 4096 * 16 / 0.5e-3 / 1e12)
    p = tmp_path / "gpu_kernels_synthetic.json"
    p.write_text(json.dumps({"records": [rec]}))
    assert bk.load_kernel_records(p) == [rec]
    bad = dict(rec, op="magic")
    p.write_text(json.dumps([bad]))
    with pytest.raises(CorruptFileError, match="op"):
        bk.load_kernel_records(p)
    with pytest.raises(CorruptFileError, match="missing"):
        bk.validate_record({"op": "ssmm"})


def test_nothing_recorded_yet_and_no_gpu_means_exit_2(capsys):
    assert isinstance(bk.load_kernel_records(), list)
    from samoyeds_lab.kernels import available

    if available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="GPU"):
        bk.run_kernel_bench()
    assert bk.main(["--tokens", "1"]) == 2
    err = capsys.readouterr().err  # one error line on stderr (samoyeds_lab._cli)
    assert "GPU" in err and err.startswith("samoyeds-lab bench kernels: error: ")
    assert set(bk.MODEL_SHAPES["Mixtral-8x7B"]) == {4096, 14336} and bk.TOKENS == (1, 8, 16, 64, 256, 1024, 4096)


# ------------------------------------------------------------------ kernel="auto": decided by measurement
def _wg_records(device="NVIDIA H100 80GB HBM3", dtype="float16", ratios=None):
    """SYNTHETIC ssmm_wg-vs-ssmm records: {tokens: [ms/baseline_ms per model]}."""
    ratios = ratios or {1: [1.3, 1.2], 64: [1.1, 1.05], 1024: [0.8, 0.7, 1.1], 4096: [0.6, 0.65]}
    out = []
    for t, rs in ratios.items():
        for i, r in enumerate(rs):
            out.append(bk.make_record(device=device, driver="0", versions={}, op="ssmm_wg", model=f"m{i}", m=4096,
                                      k=4096, tokens=t, dtype=dtype, ms=r, baseline="ssmm", baseline_ms=1.0,
                                      profile=H100, date="2026-01-01"))
    return out


def test_choose_ssmm_kernel_follows_the_records():
    from samoyeds_lab.kernels.ops import choose_ssmm_kernel

    recs = _wg_records()
    dev = "NVIDIA H100 80GB HBM3"
    assert choose_ssmm_kernel(1, "float16", dev, recs) == "mma_sp"
    assert choose_ssmm_kernel(16, "float16", dev, recs) == "mma_sp"  # nearest recorded: 64 (log scale), slower
    assert choose_ssmm_kernel(700, "float16", dev, recs) == "wgmma_sp"  # nearest 1024: median 0.8 < 1
    assert choose_ssmm_kernel(100_000, "float16", dev, recs) == "wgmma_sp"
    assert choose_ssmm_kernel(0, "float16", dev, recs) == "mma_sp"
    assert choose_ssmm_kernel(4096, torch.float16, dev, recs) == "wgmma_sp"
    # only the same device model and dtype count; no records: the mma.sp path
    assert choose_ssmm_kernel(4096, "float16", "NVIDIA H200", recs) == "mma_sp"
    assert choose_ssmm_kernel(4096, "bfloat16", dev, recs) == "mma_sp"
    assert choose_ssmm_kernel(4096, "float16", dev, []) == "mma_sp"
    mixed = recs + [dict(r, baseline="torch_dense", ms=0.01) for r in recs]  # other baselines are ignored
    assert choose_ssmm_kernel(16, "float16", dev, mixed) == "mma_sp"
    with pytest.raises(ValueError, match="tokens"):
        choose_ssmm_kernel(-1, "float16", dev, recs)
    with pytest.raises(TypeError, match="tokens"):
        choose_ssmm_kernel(8.5, "float16", dev, recs)
    with pytest.raises(ValueError, match="dtype"):
        choose_ssmm_kernel(8, torch.float32, dev, recs)
    with pytest.raises(TypeError, match="device"):
        choose_ssmm_kernel(8, "float16", 0, recs)


def test_auto_kernel_launches_what_the_records_chose(monkeypatch):
    from samoyeds_lab.kernels import ops

    from .test_launch import install_recorder, zero_samoyeds

    w = zero_samoyeds(256, 256)
    recs = tuple(_wg_records())
    for arch, tokens, want in (("90a", 8, "ssmm_f16"), ("90a", 2048, "ssmm_wg_f16"), ("80", 2048, "ssmm_f16")):
        rec = install_recorder(monkeypatch)
        monkeypatch.setattr(ops, "_arch", lambda arch=arch: arch)
        monkeypatch.setattr(ops, "_recorded_kernel_records", lambda: recs)
        x = torch.zeros(tokens, 256, dtype=torch.float16)
        ops.ssmm(w, x, torch.arange(tokens, dtype=torch.int32), backend="cupy")
        assert rec.launches[0].fn == want, (arch, tokens)
    # an explicit kernel wins over the records
    rec = install_recorder(monkeypatch)
    monkeypatch.setattr(ops, "_recorded_kernel_records", lambda: recs)
    ops.ssmm(w, torch.zeros(8, 256, dtype=torch.float16), None, backend="cupy", kernel="wgmma_sp")
    assert rec.launches[0].fn == "ssmm_wg_f16"


# ------------------------------------------------------------------ the sweep's bookkeeping, on the CPU
def _cpu_sweep(ops=bk.OPS, hopper=True, tokens=(1, 8), time_fn=None):
    from samoyeds_lab.bench import _kernels_gpu as kg

    clock = iter(range(1, 10_000))
    return kg.sweep({"tiny": (256, 512)}, tokens, "float16", profile=H100, ops=ops,
                    time_fn=time_fn or (lambda fn: float(next(clock))), device="cpu", backend="reference",
                    hopper=hopper, identity={"device": "SYNTHETIC", "driver": "0", "versions": {}})


def test_sweep_pairs_ops_with_baselines_on_the_same_tokens():
    """No GPU: CPU tensors, reference backend, a fake clock. Checks which records exist, not any time."""
    recs = _cpu_sweep()
    pairs = {(r["op"], r["baseline"], r["tokens"]) for r in recs}
    for t in (1, 8):
        for op in ("ssmm", "ssmm_wg", "spmm_24", "dense_mm"):
            assert (op, "torch_dense", t) in pairs
        assert ("ssmm_wg", "ssmm", t) in pairs  # the measurement kernel="auto" decides from
        assert ("ssmm", "ssmm", t) not in pairs and ("dense_mm", "dense_mm", t) not in pairs
    assert all(r["m"] == 512 and r["k"] == 256 and r["device"] == "SYNTHETIC" for r in recs)
    for r in recs:
        bk.validate_record(r)
    # an op's time is the same number in every record of it (timed once per tokens count)
    by_op = {}
    for r in recs:
        by_op.setdefault((r["op"], r["tokens"]), set()).add(r["ms"])
    assert all(len(v) == 1 for v in by_op.values())
    # off Hopper the wgmma path is neither run nor recorded
    assert not any(r["op"] == "ssmm_wg" for r in _cpu_sweep(hopper=False))
    only_wg = {(r["op"], r["baseline"]) for r in _cpu_sweep(ops=("ssmm_wg",), tokens=(1,))}
    assert ("ssmm_wg", "ssmm") in only_wg and not any(op == "ssmm" for op, _ in only_wg)


def test_sweep_never_times_a_wrong_kernel(monkeypatch):
    from samoyeds_lab.bench import _kernels_gpu as kg

    timed = []
    monkeypatch.setattr(kg, "ssmm", lambda w, x, idx, **kw: torch.zeros(idx.numel(), w.shape[0], dtype=x.dtype))
    recs = _cpu_sweep(ops=("ssmm", "dense_mm"), tokens=(8,), time_fn=lambda fn: timed.append(fn) or 1.0)
    # torch_dense and dense_mm were checked and timed (kernel + whole op); ssmm never was
    assert len(timed) == 4
    bad = [r for r in recs if r["op"] == "ssmm"]
    assert bad and all(r["status"] == "failed" and "ssmm differs from the reference" in r["reason"]
                       and r["ms"] == 0 for r in bad)
    assert [r["status"] for r in recs if r["op"] == "dense_mm"] == ["ok"]  # the sweep went on


# ------------------------------------------------------------------ the reader lives below kernels and bench
def test_records_module_is_what_bench_reexports(tmp_path):
    from samoyeds_lab import records

    for name in ("OPS", "BASELINES", "RECORD_KEYS", "validate_record", "load_kernel_records"):
        assert getattr(bk, name) is getattr(records, name), name
    rec = records.build_record(device="SYNTHETIC", driver="0", versions={}, op="spmm_24", model="m", m=19, k=100,
                               tokens=3, dtype="bfloat16", ms=0.25, baseline="torch_24", baseline_ms=0.5,
                               roofline_ms=0.125, date="2026-01-01")
    assert rec["roofline_ms"] == 0.125 and rec["tflops"] == pytest.approx(2 * 19 * 100 * 3 / 0.25e-3 / 1e12)
    full = bk.make_record(device="SYNTHETIC", driver="0", versions={}, op="spmm_24", model="m", m=19, k=100,
                          tokens=3, dtype="bfloat16", ms=0.25, baseline="torch_24", baseline_ms=0.5, profile=H100,
                          date="2026-01-01")
    assert full["roofline_ms"] == pytest.approx(bk.roofline_ms("spmm_24", 19, 100, 3, H100, "bfloat16"))
    p = tmp_path / "one.json"
    p.write_text(json.dumps([rec]))
    assert records.load_kernel_records(p) == [rec]
    with pytest.raises(FileNotFoundError, match="path"):
        records.load_kernel_records(tmp_path / "absent.json")


@pytest.mark.parametrize("field, value", [("tokens", True), ("m", -1), ("ms", "fast"), ("baseline_ms", float("nan")),
                                          ("dtype", "float32"), ("baseline", "cublas")])
def test_validate_record_names_the_bad_field(field, value):
    from samoyeds_lab import records

    good = records.build_record(device="SYNTHETIC", driver="0", versions={}, op="ssmm", model="m", m=8, k=8,
                                tokens=1, dtype="float16", ms=1.0, baseline="ssmm", baseline_ms=1.0, roofline_ms=0.5)
    with pytest.raises(CorruptFileError, match=field):
        records.validate_record(dict(good, **{field: value}))


def test_decode_and_prefill_kernels_are_timed_in_their_token_ranges_against_mma_sp():
    """ssmm_decode only at <= 64 tokens, ssmm_prefill only at >= 128 and only on Hopper; both also
    against the mma.sp path ``ssmm`` (the records kernel="auto" would decide from)."""
    recs = _cpu_sweep(tokens=(8, 128), hopper=True)
    pairs = {(r["op"], r["baseline"], r["tokens"]) for r in recs}
    assert ("ssmm_decode", "ssmm", 8) in pairs and not any(op == "ssmm_decode" and t == 128 for op, _, t in pairs)
    assert ("ssmm_prefill", "ssmm", 128) in pairs and not any(op == "ssmm_prefill" and t == 8 for op, _, t in pairs)
    assert all(r["status"] == "ok" for r in recs if r["op"] in ("ssmm_decode", "ssmm_prefill"))
    assert not any(r["op"] == "ssmm_prefill" for r in _cpu_sweep(tokens=(128,), hopper=False))
