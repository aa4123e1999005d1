"""Roofline model: byte counts against the formats' own .nbytes, the two bounds, the decode and prefill
ceilings of the issue (≈1.78× for 2:4, ≈3.4–3.5× for Samoyeds at decode; 2× and 4× compute-bound), and
argument errors."""

import math

import pytest
import torch

from samoyeds_lab.bench.roofline import (
    DEFAULT_TOKENS,
    GPU_PROFILES,
    OPS,
    RooflinePoint,
    expert_matrices,
    main,
    op_bytes,
    roofline,
    roofline_sweep,
    speedup_ceiling,
)
from samoyeds_lab.offload.hardware import load_profile
from samoyeds_lab.prune import sparsify

MIXTRAL_W1 = (14336, 4096)


# ---------------------------------------------------------------------------------------------- references
def ref_bytes(op, m, k, t, b=2, n=1, M=2, V=128, index_bits=8):
    """The table of the module docstring, written out independently."""
    if op == "dense":
        w = m * k * b
    elif op == "spmm":
        w = m * k / 2 * b + m * k / 2 * 2 / 8
    else:
        rows = m * n / M
        w = rows * k / 2 * b + rows * k / 2 * 2 / 8 + (k / V) * rows * index_bits / 8
    return w + t * k * b + t * m * b + (4 * t if op == "ssmm" else 0)


# ---------------------------------------------------------------------------------------------- bytes
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("m,k,t", [(14336, 4096, 1), (4096, 14336, 64), (1408, 2048, 19), (256, 128, 989)])
def test_bytes_match_the_formula(op, m, k, t):
    nb = op_bytes(op, m, k, t, "bfloat16")
    assert nb["total"] == pytest.approx(ref_bytes(op, m, k, t), rel=0, abs=2)
    assert nb["total"] == nb["weight"] + nb["activation"] + nb["index"] + nb["output"]
    assert nb["activation"] == t * k * 2 and nb["output"] == t * m * 2


@pytest.mark.parametrize("shape", [(64, 256), (38, 384)])
def test_weight_bytes_equal_the_formats_nbytes(shape):
    """With the packed index width the model's weight bytes are exactly the compressed operand's .nbytes."""
    w = torch.randn(*shape).half()
    m, k = shape
    assert op_bytes("dense", m, k, 1)["weight"] == w.numel() * 2
    assert op_bytes("spmm", m, k, 1)["weight"] == sparsify(w, "2:4").nbytes
    sam = sparsify(w, "samoyeds", n=1, m=2, vector=128)
    assert op_bytes("ssmm", m, k, 1, index_bits=1)["weight"] == sam.nbytes
    # the kernel's uint8 indices: one byte per (window, compressed row)
    assert op_bytes("ssmm", m, k, 1)["weight"] == sam.nbytes - math.ceil(sam.row_index.numel() / 8) + sam.row_index.numel()


def test_zero_tokens_is_no_work():
    for op in OPS:
        assert op_bytes(op, 256, 512, 0)["total"] == 0
        p = roofline(op, 256, 512, 0)
        assert p.time_s == 0 and p.tflops == 0 and p.flops == 0


# ---------------------------------------------------------------------------------------------- bounds
@pytest.mark.parametrize("profile", GPU_PROFILES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("t", [1, 7, 64, 1000, 4096])
def test_time_is_the_max_of_the_two_bounds(profile, op, t):
    prof = load_profile(profile)
    m, k = MIXTRAL_W1
    p = roofline(op, m, k, t, profile, "float16")
    assert isinstance(p, RooflinePoint)
    assert p.memory_s == pytest.approx(ref_bytes(op, m, k, t) / (prof.memory_bandwidth_gbs * 1e9))
    rows = m // 2 if op == "ssmm" else m
    peak = prof.fp16_tflops * 1e12 if op == "dense" else prof.fp16_sparse_tflops * 1e12
    assert p.compute_s == pytest.approx(2 * rows * k * t / peak)
    assert p.time_s == max(p.memory_s, p.compute_s)
    assert p.bound == ("compute" if p.compute_s > p.memory_s else "memory")
    assert p.flops == 2 * m * k * t
    assert p.nonzero_flops == {"dense": 1, "spmm": 0.5, "ssmm": 0.25}[op] * p.flops
    assert p.tflops == pytest.approx(p.flops / p.time_s / 1e12)
    assert p.to_dict()["time_ms"] == pytest.approx(p.time_s * 1e3)


@pytest.mark.parametrize("profile", GPU_PROFILES)
def test_decode_and_prefill_ceilings(profile):
    m, k = MIXTRAL_W1
    # decode: memory-bound, the ceiling is the byte ratio
    assert speedup_ceiling("spmm", m, k, 1, profile) == pytest.approx(1.78, abs=0.01)
    assert speedup_ceiling("ssmm", m, k, 1, profile) == pytest.approx(3.53, abs=0.01)
    assert speedup_ceiling("ssmm", m, k, 1, profile, index_bits=32) == pytest.approx(3.46, abs=0.01)
    for t in (1, 16, 64):
        assert roofline("ssmm", m, k, t, profile).bound == "memory"
        assert 3.2 < speedup_ceiling("ssmm", m, k, t, profile) < 3.6
        assert 1.7 < speedup_ceiling("spmm", m, k, t, profile) < 1.79
    # prefill: compute-bound everywhere, 2x (sparse peak) and 4x (half the rows at the sparse peak)
    assert all(roofline(op, m, k, 4096, profile).bound == "compute" for op in OPS)
    assert speedup_ceiling("spmm", m, k, 4096, profile) == pytest.approx(2.0)
    assert speedup_ceiling("ssmm", m, k, 4096, profile) == pytest.approx(4.0)
    assert speedup_ceiling("dense", m, k, 64, profile) == 1.0


def test_h200_is_faster_than_h100_only_where_memory_bound():
    m, k = MIXTRAL_W1
    for op in OPS:
        h100, h200 = roofline(op, m, k, 16, "h100_sxm"), roofline(op, m, k, 16, "h200")
        assert h200.time_s == pytest.approx(h100.time_s * 3350 / 4800)
        assert roofline(op, m, k, 4096, "h200").time_s == roofline(op, m, k, 4096, "h100_sxm").time_s


def test_sweep_and_expert_matrices():
    sweep = roofline_sweep(*MIXTRAL_W1, DEFAULT_TOKENS, "a100_sxm", torch.bfloat16)
    assert set(sweep) == set(OPS)
    for op, pts in sweep.items():
        assert [p.tokens for p in pts] == list(DEFAULT_TOKENS)
        assert all(p.dtype == "bfloat16" and p.op == op for p in pts)
        times = [p.time_s for p in pts]
        assert times == sorted(times)  # more tokens never take less time
    assert DEFAULT_TOKENS[0] == 1 and DEFAULT_TOKENS[-1] == 4096
    assert expert_matrices(4096, 14336) == {"gate/up (w1, w3)": (14336, 4096), "down (w2)": (4096, 14336)}


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs,exc,needle", [
    (dict(op="sparse"), ValueError, "op"),
    (dict(m=0), ValueError, "m"),
    (dict(m=1.5), TypeError, "m"),
    (dict(tokens=-1), ValueError, "tokens"),
    (dict(dtype="float32"), ValueError, "dtype"),
    (dict(dtype=3), TypeError, "dtype"),
    (dict(op="spmm", k=130), ValueError, "k: expected a multiple of 4"),
    (dict(op="ssmm", m=255), ValueError, "m: expected a multiple of M=2"),
    (dict(op="ssmm", k=260), ValueError, "k: expected a multiple of V=128"),
    (dict(op="ssmm", samoyeds=(2, 2, 128)), ValueError, "n < M"),
    (dict(op="ssmm", samoyeds=(1, 2)), ValueError, "samoyeds"),
    (dict(profile="tpu"), ValueError, "name_or_path"),
    (dict(profile="pcie5_x16"), ValueError, "kind 'gpu'"),
    (dict(op="ssmm", index_bits=0), ValueError, "index_bits"),
])
def test_errors_name_the_argument(kwargs, exc, needle):
    args = dict(op="dense", m=256, k=512, tokens=4, profile="h100_sxm", dtype="float16") | kwargs
    with pytest.raises(exc, match=needle):
        roofline(args.pop("op"), args.pop("m"), args.pop("k"), args.pop("tokens"), args.pop("profile"),
                 args.pop("dtype"), **args)


def test_sweep_and_speedup_errors():
    with pytest.raises(ValueError, match="tokens"):
        roofline_sweep(256, 512, [])
    with pytest.raises(ValueError, match="ops"):
        roofline_sweep(256, 512, [1], ops="dense")
    with pytest.raises(ValueError, match="tokens"):
        speedup_ceiling("ssmm", 256, 512, 0)
    with pytest.raises(ValueError, match="d_ffn"):
        expert_matrices(4096, 0)


def test_cli_prints_the_table(capsys):
    assert main(["--m", "4096", "--k", "14336", "--profile", "h200", "--tokens", "1", "4096"]) == 0
    out = capsys.readouterr().out
    assert "not a measurement" in out and "NVIDIA H200" in out
    assert "1.78x" in out and "4.00x" in out
    assert main(["--m", "255", "--k", "512"]) == 2  # ssmm needs even m: one error line, exit 2
    assert "expected a multiple of M=2" in capsys.readouterr().err
