"""Bad inputs for :mod:`samoyeds_lab.exercises` and the top level (``DeviceInfo``)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samoyeds_lab import DeviceInfo, device_info
from samoyeds_lab.exercises import (
    check_crossover,
    check_decode_ceiling,
    check_decode_word,
    check_mask_24,
    check_path_times,
    check_unit_columns,
)

from .harness import case, ids, run_case

EXEMPT = {
    "device_info": "takes no arguments (a cached probe of this machine that never raises)",
}

_INFO = dict(backend="reference", gpu_name=None, compute_capability=None, sptc=False, sm90a=False,
             cupy_version=None, torch_version="2.0", torch_cuda=False, cpu="x86_64", threads=2)


def _info(**kw):
    return lambda: DeviceInfo(**{**_INFO, **kw})


def _stub(*args):
    raise NotImplementedError


CASES = [
    case("exercises.check_mask_24", "fn not callable", lambda: check_mask_24(None), TypeError, "fn"),
    case("exercises.check_mask_24", "trials negative", lambda: check_mask_24(_stub, trials=-1), ValueError,
         "trials"),
    case("exercises.check_mask_24", "trials a str", lambda: check_mask_24(_stub, trials="3"), TypeError, "trials"),
    case("exercises.check_mask_24", "trials huge", lambda: check_mask_24(_stub, trials=10**12), ValueError,
         "trials"),
    case("exercises.check_mask_24", "seed a float", lambda: check_mask_24(_stub, seed=0.5), TypeError, "seed"),
    case("exercises.check_mask_24", "seed negative", lambda: check_mask_24(_stub, seed=-1), ValueError, "seed"),
    case("exercises.check_decode_word", "fn an int", lambda: check_decode_word(3), TypeError, "fn"),
    case("exercises.check_unit_columns", "fn a str", lambda: check_unit_columns("fn"), TypeError, "fn"),
    case("exercises.check_decode_ceiling", "fn None", lambda: check_decode_ceiling(None), TypeError, "fn"),
    case("exercises.check_path_times", "fn a list", lambda: check_path_times([]), TypeError, "fn"),
    case("exercises.check_crossover", "fn a float", lambda: check_crossover(1.0), TypeError, "fn"),
    case("DeviceInfo", "unknown backend", _info(backend="gpu"), ValueError, "backend"),
    case("DeviceInfo", "threads 0", _info(threads=0), ValueError, "threads"),
    case("DeviceInfo", "threads a str", _info(threads="2"), TypeError, "threads"),
    case("DeviceInfo", "sptc a str", _info(sptc="no"), TypeError, "sptc"),
    case("DeviceInfo", "compute_capability one number", _info(compute_capability=(8,)), ValueError,
         "compute_capability"),
    case("DeviceInfo", "compute_capability a float", _info(compute_capability=8.0), TypeError,
         "compute_capability"),
    case("DeviceInfo", "reasons a str", _info(reasons="no GPU"), TypeError, "reasons"),
    case("DeviceInfo", "cupy backend without SpTC", _info(backend="cupy"), ValueError, "backend"),
    case("DeviceInfo", "torch_version None", _info(torch_version=None), TypeError, "torch_version"),
]


@pytest.mark.parametrize("c", CASES, ids=ids(CASES))
def test_bad_input(c):
    run_case(c)


def test_device_info_is_valid_device_info():
    """The probe builds a DeviceInfo that its own validation accepts (and a copy of it too)."""
    info = device_info()
    assert isinstance(info, DeviceInfo)
    assert dataclasses.replace(info) == info
    assert info.banner()


@settings(max_examples=30, deadline=None)
@given(st.integers(-5, 10**6))
def test_threads_positive_or_named_error(t):
    if t >= 1:
        assert DeviceInfo(**{**_INFO, "threads": t}).threads == t
    else:
        with pytest.raises(ValueError, match="threads"):
            DeviceInfo(**{**_INFO, "threads": t})
