"""Bad inputs for :mod:`samoyeds_lab.exercises` and the top level (``DeviceInfo``)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samoyeds_lab import DeviceInfo, device_info
from samoyeds_lab.exercises import (
    check_belady_hits,
    check_crossover,
    check_decode_ceiling,
    check_decode_word,
    check_expert_gather,
    check_hot_set,
    check_locality,
    check_lru_hits,
    check_mask_24,
    check_moe_combine,
    check_offload_time,
    check_path_times,
    check_samoyeds_mask,
    check_top_k_routing,
    check_unit_columns,
    check_wanda_mask,
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
    case("exercises.check_top_k_routing", "fn None", lambda: check_top_k_routing(None), TypeError, "fn"),
    case("exercises.check_top_k_routing", "fn a str", lambda: check_top_k_routing("my_fn"), TypeError, "fn"),
    case("exercises.check_top_k_routing", "trials negative", lambda: check_top_k_routing(_stub, trials=-1), ValueError, "trials"),
    case("exercises.check_top_k_routing", "trials huge", lambda: check_top_k_routing(_stub, trials=10**12), ValueError, "trials"),
    case("exercises.check_top_k_routing", "seed a float", lambda: check_top_k_routing(_stub, seed=0.5), TypeError, "seed"),
    case("exercises.check_top_k_routing", "seed negative", lambda: check_top_k_routing(_stub, seed=-1), ValueError, "seed"),
    case("exercises.check_locality", "fn None", lambda: check_locality(None), TypeError, "fn"),
    case("exercises.check_locality", "fn a str", lambda: check_locality("my_fn"), TypeError, "fn"),
    case("exercises.check_locality", "trials negative", lambda: check_locality(_stub, trials=-1), ValueError, "trials"),
    case("exercises.check_locality", "trials huge", lambda: check_locality(_stub, trials=10**12), ValueError, "trials"),
    case("exercises.check_locality", "seed a float", lambda: check_locality(_stub, seed=0.5), TypeError, "seed"),
    case("exercises.check_locality", "seed negative", lambda: check_locality(_stub, seed=-1), ValueError, "seed"),
    case("exercises.check_expert_gather", "fn None", lambda: check_expert_gather(None), TypeError, "fn"),
    case("exercises.check_expert_gather", "fn a str", lambda: check_expert_gather("my_fn"), TypeError, "fn"),
    case("exercises.check_expert_gather", "trials negative", lambda: check_expert_gather(_stub, trials=-1), ValueError, "trials"),
    case("exercises.check_expert_gather", "trials huge", lambda: check_expert_gather(_stub, trials=10**12), ValueError, "trials"),
    case("exercises.check_expert_gather", "seed a float", lambda: check_expert_gather(_stub, seed=0.5), TypeError, "seed"),
    case("exercises.check_expert_gather", "seed negative", lambda: check_expert_gather(_stub, seed=-1), ValueError, "seed"),
    case("exercises.check_moe_combine", "fn None", lambda: check_moe_combine(None), TypeError, "fn"),
    case("exercises.check_moe_combine", "fn a str", lambda: check_moe_combine("my_fn"), TypeError, "fn"),
    case("exercises.check_moe_combine", "trials negative", lambda: check_moe_combine(_stub, trials=-1), ValueError, "trials"),
    case("exercises.check_moe_combine", "trials huge", lambda: check_moe_combine(_stub, trials=10**12), ValueError, "trials"),
    case("exercises.check_moe_combine", "seed a float", lambda: check_moe_combine(_stub, seed=0.5), TypeError, "seed"),
    case("exercises.check_moe_combine", "seed negative", lambda: check_moe_combine(_stub, seed=-1), ValueError, "seed"),
    case("exercises.check_wanda_mask", "fn None", lambda: check_wanda_mask(None), TypeError, "fn"),
    case("exercises.check_wanda_mask", "fn a str", lambda: check_wanda_mask("my_fn"), TypeError, "fn"),
    case("exercises.check_wanda_mask", "trials negative", lambda: check_wanda_mask(_stub, trials=-1), ValueError, "trials"),
    case("exercises.check_wanda_mask", "trials huge", lambda: check_wanda_mask(_stub, trials=10**12), ValueError, "trials"),
    case("exercises.check_wanda_mask", "seed a float", lambda: check_wanda_mask(_stub, seed=0.5), TypeError, "seed"),
    case("exercises.check_wanda_mask", "seed negative", lambda: check_wanda_mask(_stub, seed=-1), ValueError, "seed"),
    case("exercises.check_samoyeds_mask", "fn None", lambda: check_samoyeds_mask(None), TypeError, "fn"),
    case("exercises.check_samoyeds_mask", "fn a str", lambda: check_samoyeds_mask("my_fn"), TypeError, "fn"),
    case("exercises.check_samoyeds_mask", "trials negative", lambda: check_samoyeds_mask(_stub, trials=-1), ValueError, "trials"),
    case("exercises.check_samoyeds_mask", "trials huge", lambda: check_samoyeds_mask(_stub, trials=10**12), ValueError, "trials"),
    case("exercises.check_samoyeds_mask", "seed a float", lambda: check_samoyeds_mask(_stub, seed=0.5), TypeError, "seed"),
    case("exercises.check_samoyeds_mask", "seed negative", lambda: check_samoyeds_mask(_stub, seed=-1), ValueError, "seed"),
    case("exercises.check_hot_set", "fn None", lambda: check_hot_set(None), TypeError, "fn"),
    case("exercises.check_hot_set", "fn a str", lambda: check_hot_set("my_fn"), TypeError, "fn"),
    case("exercises.check_hot_set", "trials negative", lambda: check_hot_set(_stub, trials=-1), ValueError, "trials"),
    case("exercises.check_hot_set", "trials huge", lambda: check_hot_set(_stub, trials=10**12), ValueError, "trials"),
    case("exercises.check_hot_set", "seed a float", lambda: check_hot_set(_stub, seed=0.5), TypeError, "seed"),
    case("exercises.check_hot_set", "seed negative", lambda: check_hot_set(_stub, seed=-1), ValueError, "seed"),
    case("exercises.check_lru_hits", "fn None", lambda: check_lru_hits(None), TypeError, "fn"),
    case("exercises.check_lru_hits", "fn a str", lambda: check_lru_hits("my_fn"), TypeError, "fn"),
    case("exercises.check_lru_hits", "seed a float", lambda: check_lru_hits(_stub, seed=0.5), TypeError, "seed"),
    case("exercises.check_lru_hits", "seed negative", lambda: check_lru_hits(_stub, seed=-1), ValueError, "seed"),
    case("exercises.check_belady_hits", "fn None", lambda: check_belady_hits(None), TypeError, "fn"),
    case("exercises.check_belady_hits", "fn a str", lambda: check_belady_hits("my_fn"), TypeError, "fn"),
    case("exercises.check_belady_hits", "seed a float", lambda: check_belady_hits(_stub, seed=0.5), TypeError, "seed"),
    case("exercises.check_belady_hits", "seed negative", lambda: check_belady_hits(_stub, seed=-1), ValueError, "seed"),
    case("exercises.check_offload_time", "fn None", lambda: check_offload_time(None), TypeError, "fn"),
    case("exercises.check_offload_time", "fn a str", lambda: check_offload_time("my_fn"), TypeError, "fn"),
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
