"""Every kernels/*.cu compiles for sm_80 and sm_90a, with NVRTC exactly as the loader calls it, and with nvcc.

No GPU needed: PyPI ``cuda-bindings`` + ``nvidia-cuda-nvrtc`` compile to cubin without a driver. The
generated PTX is checked for the instructions each kernel is about, and the ``#ifndef`` defaults inside
each source are checked against :mod:`samoyeds_lab.tiles` (the loader passes the same numbers as ``-D``),
so a bare ``nvcc`` build and the loader's build cannot drift apart.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from samoyeds_lab import tiles
from samoyeds_lab.kernels import build
from samoyeds_lab.kernels.build import (
    KERNEL_DIR, SOURCES, TEST_ARCHS, KernelCompileError, compile_source, nvcc_options, nvrtc_options, tile_defines,
)

pytest.importorskip("cuda.bindings.nvrtc", reason="NVRTC from PyPI (cuda-bindings, nvidia-cuda-nvrtc) not installed")

PROBE = Path(__file__).with_name("one_warp_mma_sp.cu")
WG_PROBE = Path(__file__).with_name("one_warpgroup_wgmma_sp.cu")
#: The Hopper-only path of ssmm.cu (entry points ssmm_wg_*): in the sm_90a PTX, never in the sm_80 PTX.
WGMMA = ["wgmma.mma_async.sp.sync.aligned.m64n64k32.f32.f16.f16", "wgmma.mma_async.sp.sync.aligned.m64n64k32.f32.bf16.bf16",
         "wgmma.fence.sync.aligned", "wgmma.commit_group.sync.aligned", "wgmma.wait_group.sync.aligned 0",
         "fence.proxy.async.shared::cta"]
EXPECT = {
    "ssmm": ["mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32",
             "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32",
             "cp.async.cg.shared.global", "cp.async.wait_group", "ldmatrix.sync.aligned.m8n8.x4.shared.b16",
             "atom.global.add.f32", "atom.cas.b32"],
    "spmm": ["mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32",
             "mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32",
             "cp.async.cg.shared.global", "ldmatrix.sync.aligned.m8n8.x4.shared.b16"],
    "dense_mm": ["mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
                 "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
                 "cp.async.cg.shared.global", "ldmatrix.sync.aligned.m8n8.x4.shared.b16"],
}
ENTRIES = {
    "ssmm": ["ssmm_f16", "ssmm_bf16", "ssmm_f16_finalize", "ssmm_bf16_finalize", "ssmm_wg_f16", "ssmm_wg_bf16",
             "ssmm_wg_f16_finalize", "ssmm_wg_bf16_finalize"],
    "spmm": ["spmm_f16", "spmm_bf16", "spmm_f16_finalize", "spmm_bf16_finalize"],
    "dense_mm": ["dense_mm_f16", "dense_mm_bf16", "dense_mm_f16_finalize", "dense_mm_bf16_finalize"],
}


@pytest.mark.parametrize("arch", TEST_ARCHS)
@pytest.mark.parametrize("name", SOURCES)
def test_nvrtc_compiles_with_loader_options(name, arch):
    res = compile_source(name, arch)
    assert res.options == nvrtc_options(arch)  # the loader's exact options
    assert res.cubin[:4] == b"\x7fELF"
    assert f".target sm_{arch}" in res.ptx
    for instr in EXPECT[name]:
        assert instr in res.ptx, f"{instr} missing from the PTX of {name}.cu (sm_{arch})"
    for entry in ENTRIES[name]:
        assert re.search(rf"\.entry {entry}\(", res.ptx), f"entry point {entry} missing"
    if name == "dense_mm":
        assert "mma.sp" not in res.ptx
    for instr in WGMMA:  # the wgmma path exists in sm_90a builds only (elsewhere its entry points trap)
        assert (instr in res.ptx) == (name == "ssmm" and arch == "90a"), f"{instr} in {name}.cu for sm_{arch}"


@pytest.mark.parametrize("name", ["ssmm", "spmm"])
def test_plain_sp_form_without_ordered_metadata(name):
    """The pre-PTX-8.5 spelling (guarded by __CUDACC_VER_*) still compiles; ptxas may warn about it."""
    res = compile_source(name, "80", extra_options=("-DSAMOYEDS_ORDERED_METADATA=0",))
    assert "mma.sp.sync.aligned.m16n8k32.row.col.f32.f16.f16.f32" in res.ptx
    assert "ordered_metadata" not in res.ptx


@pytest.mark.parametrize("arch", TEST_ARCHS)
def test_one_warp_probe_compiles(arch):
    res = compile_source(PROBE, arch)
    for sel in ("0", "1"):
        assert re.search(rf"mma\.sp::ordered_metadata\.sync\.aligned\.m16n8k32\.row\.col\.f32\.f16\.f16\.f32 .*, {sel};",
                         res.ptx) or f", {sel};" in res.ptx
    assert "ldmatrix.sync.aligned.m8n8.x4.shared.b16" in res.ptx


def test_one_warpgroup_probe_compiles():
    res = compile_source(WG_PROBE, "90a")
    for dt in ("f16", "bf16"):
        for sel in ("0", "1"):
            assert re.search(rf"wgmma\.mma_async\.sp\.sync\.aligned\.m64n64k32\.f32\.{dt}\.{dt}\s.*,\s*{sel},\s*p,"
                             rf"\s*1,\s*1,\s*0;", res.ptx), f"probe {dt} selector {sel}"
    assert res.ptx.count("wgmma.mma_async.sp") == 4 and "fence.proxy.async.shared::cta" in res.ptx


def test_compile_error_carries_the_nvrtc_log(tmp_path):
    bad = tmp_path / "broken.cu"
    bad.write_text('extern "C" __global__ void k(int* p) { p[0] = undefined_name; }\n')
    with pytest.raises(KernelCompileError, match="undefined_name"):
        compile_source(bad, "80")


def test_bad_arch_and_name():
    with pytest.raises(ValueError, match="arch"):
        nvrtc_options("sm_75")
    with pytest.raises(ValueError, match="name"):
        compile_source("nope", "80")
    assert build.normalize_arch((9, 0)) == "90" and build.normalize_arch("sm_90a") == "90a"


def _defaults(text: str) -> dict[str, int]:
    return {k: int(v.strip("()")) for k, v in re.findall(r"#ifndef (\w+)\n#define \1 (\(?-?\d+\)?)\n#endif", text)}


@pytest.mark.parametrize("name", SOURCES)
def test_source_defaults_equal_tiles(name):
    """The #ifndef defaults of each .cu are exactly the -D values the loader passes (from tiles.py)."""
    defaults = _defaults((KERNEL_DIR / f"{name}.cu").read_text())
    defines = tile_defines()
    assert set(defines) <= set(defaults), f"{name}.cu lacks defaults for {set(defines) - set(defaults)}"
    for k, v in defines.items():
        assert defaults[k] == v, f"{name}.cu: {k} defaults to {defaults[k]}, tiles.py / loader says {v}"
    opts = nvrtc_options("80")
    for k, v in defines.items():
        assert f"-D{k}={v}" in opts
    assert defines["BLOCK_M"] == tiles.BLOCK_M and defines["STAGES"] == tiles.STAGES


def test_changed_tiles_reach_the_kernel(monkeypatch):
    """A different tile constant in tiles.py changes the compiled code (the -D really is used)."""
    monkeypatch.setattr(tiles, "STAGES", 3)
    res = compile_source("spmm", "80")
    assert "-DSTAGES=3" in res.options
    assert "cp.async.wait_group 1" in res.ptx  # STAGES - 2
    monkeypatch.undo()
    assert "cp.async.wait_group 0" in compile_source("spmm", "80").ptx


NVCC = shutil.which("nvcc") or ("/usr/local/bin/nvcc" if Path("/usr/local/bin/nvcc").exists() else None)


@pytest.mark.skipif(NVCC is None, reason="nvcc not on this machine")
@pytest.mark.parametrize("arch", TEST_ARCHS)
@pytest.mark.parametrize("name", SOURCES)
def test_nvcc_compiles(name, arch, tmp_path):
    src = KERNEL_DIR / f"{name}.cu"
    obj = tmp_path / f"{name}.o"
    proc = subprocess.run([NVCC, *nvcc_options(arch), "-c", str(src), "-o", str(obj)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert obj.stat().st_size > 0


@pytest.mark.skipif(NVCC is None, reason="nvcc not on this machine")
def test_nvcc_compiles_without_defines(tmp_path):
    """Self-contained: the bare source (defaults only) compiles too."""
    for name in SOURCES:
        proc = subprocess.run([NVCC, "-arch=sm_80", "-c", str(KERNEL_DIR / f"{name}.cu"), "-o", str(tmp_path / "x.o")],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr


def test_compiling_leaves_torch_load_working(tmp_path):
    """NVRTC runs in a child process: a successful in-process compile broke torch.load of float tensors
    saved elsewhere (torch 2.13 + PyPI NVRTC 13.5). Save in a fresh interpreter, compile here, load here."""
    import subprocess
    import sys

    import torch

    path = tmp_path / "f.pt"
    subprocess.run([sys.executable, "-c", f"import torch; torch.save(torch.arange(32.0), {str(path)!r})"], check=True)
    compile_source("dense_mm", "80", extra_options=("-DSAMOYEDS_TORCH_LOAD_PROBE=1",))
    assert torch.equal(torch.load(path), torch.arange(32.0))
