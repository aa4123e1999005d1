"""device_info() and the CLI: never crash, say why a fast path is off."""

from __future__ import annotations

import json
import sys
import types

import pytest

import samoyeds_lab
from samoyeds_lab import cli, device


def fake_cupy(*, available=True, raises=None, cc="90", name=b"NVIDIA H100 80GB HBM3"):
    mod = types.ModuleType("cupy")
    mod.__version__ = "13.6.0"

    def is_available():
        if raises:
            raise raises
        return available

    mod.is_available = is_available

    class Device:
        id = 0
        compute_capability = cc

    runtime = types.SimpleNamespace(getDeviceProperties=lambda i: {"name": name})
    mod.cuda = types.SimpleNamespace(Device=Device, runtime=runtime)
    return mod


@pytest.fixture
def probe(monkeypatch):
    def run(mod):
        device.device_info.cache_clear()
        if mod is None:
            monkeypatch.setitem(sys.modules, "cupy", None)  # import raises ImportError
        else:
            monkeypatch.setitem(sys.modules, "cupy", mod)
        try:
            return device.device_info()
        finally:
            device.device_info.cache_clear()
    return run


def test_without_cupy(probe):
    info = probe(None)
    assert info.backend == "reference" and not info.sptc and not info.sm90a
    assert "CuPy not installed" in info.banner()
    assert "backend: CPU" in info.banner()
    assert f"CPU path: {info.cpu_isa}" in info.banner() and info.cpu_isa in ("avx512", "avx2", "portable", "none")


def test_cupy_without_driver(probe):
    info = probe(fake_cupy(raises=RuntimeError("cudaErrorInsufficientDriver")))
    assert info.backend == "reference"
    assert "cudaErrorInsufficientDriver" in info.banner()


def test_cupy_no_gpu(probe):
    info = probe(fake_cupy(available=False))
    assert info.backend == "reference" and "finds no usable GPU" in info.banner()


def test_hopper(probe):
    info = probe(fake_cupy(cc="90"))
    assert info.backend == "cupy" and info.sptc and info.sm90a
    assert info.compute_capability == (9, 0)
    assert "CuPy kernels on NVIDIA H100 80GB HBM3 (compute capability 9.0)" in info.banner()


def test_ampere(probe):
    info = probe(fake_cupy(cc="86", name=b"NVIDIA GeForce RTX 3090"))
    assert info.backend == "cupy" and info.sptc and not info.sm90a
    assert "sm_90a (wgmma.sp) needs a Hopper GPU" in info.banner()


def test_turing_falls_back(probe):
    info = probe(fake_cupy(cc="75", name=b"Tesla T4"))
    assert info.backend == "reference" and not info.sptc
    assert "compute capability 7.5; Sparse Tensor Cores need 8.0+" in info.banner()


def test_public_entry_point():
    assert samoyeds_lab.device_info() is samoyeds_lab.device_info()  # cached
    assert str(samoyeds_lab.device_info()).startswith("samoyeds-lab")


def test_cli_doctor(capsys):
    assert cli.main(["doctor"]) == 0
    assert "backend:" in capsys.readouterr().out


def test_cli_bench_formats_small(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert cli.main(["bench", "formats", "--rows", "256", "--cols", "512", "--repeat", "1", "--out", str(out)]) == 0
    records = json.loads(out.read_text())
    ops = {r["op"] for r in records}
    assert "compress_samoyeds(1:2, V=128)" in ops
    assert all("device" in r and "date" in r for r in records)
    ratio = [r for r in records if "ratio" in r][0]["ratio"]
    assert 0.28 < ratio < 0.30


def test_cli_rejects_unknown_suite():
    with pytest.raises(SystemExit):
        cli.main(["bench", "nope"])


def test_cli_train_tiny_rejects_bad_steps(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # an argparse range error: one line, exit 2
        cli.main(["train-tiny", "--out", str(tmp_path / "m"), "--steps", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--steps" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
