"""Expert offloading: hardware profiles, cost model, expert caches and policies.

Submodules
----------
``hardware``
    Hardware profiles (GPU, host, near-data, link) loaded from ``data/hardware/``; :func:`probe_host`
    measures this machine into one.
``cost``
    Analytic cost of running an expert on the GPU path vs the near-data path.
``cache``
    :func:`simulate_cache`: replay an expert access trace through an LRU / FIFO / LFU / Belady / static
    cache, or an LRU cache with SiDA / next-layer prefetching, and count hits, misses and bytes fetched.
``simulate``
    :func:`simulate_offload`: replay a routing trace (batches, per-layer or global caches, byte sizes)
    and :func:`offload_latency`: turn it into time (stalls, hidden and exposed prefetch).
``predictor``
    The SiDA-style expert predictor of the tiny MoE, its baselines and shipped predictions (``data/sida``).
``placement``, ``hybrid``
    MoNDE hot/cold placement of experts, and real hybrid execution timed against the cost model (the
    near side computes from compressed Samoyeds/2:4 operands with the CPU kernels when sparsified).
``sweep``
    Every policy at every budget on one trace (Lab 06).
"""

from .cache import ALL_POLICIES, POLICIES, PREFETCH_POLICIES, CacheStats, flatten_layer_expert, simulate_cache
from .cost import (
    LayerCost,
    PathCost,
    crossover_tokens,
    gpu_path_cost,
    hot_set_placement,
    layer_cost,
    near_data_path_cost,
)
from .hardware import SCHEMA_VERSION, HardwareProfile, HostProbe, list_profiles, load_profile, probe_host, profiles_dir
from .hybrid import (
    NEAR_FORMATS,
    HybridExecutor,
    calibrate_host,
    compressed_bytes,
    compressed_ops,
    make_experts,
    measure_paths,
    time_hybrid,
)
from .placement import EXACT_MAX_EXPERTS, Placement, place_experts, place_layers
from .placement import POLICIES as PLACEMENT_POLICIES
from .simulate import (
    SCOPES,
    ExpertAccesses,
    OffloadLatency,
    OffloadStats,
    expert_accesses,
    noisy_predictions,
    offload_latency,
    oracle_predictions,
    simulate_offload,
)
from .sweep import MIXTRAL_EXPERT, SWEEP_POLICIES, ExpertShape, budget_sweep, policy_latencies

__all__ = [
    "CacheStats", "POLICIES", "simulate_cache", "flatten_layer_expert",
    "HardwareProfile", "HostProbe", "list_profiles", "load_profile", "probe_host", "profiles_dir", "SCHEMA_VERSION",
    "PathCost", "LayerCost", "gpu_path_cost", "near_data_path_cost", "layer_cost", "hot_set_placement",
    "crossover_tokens",
    "ALL_POLICIES", "PREFETCH_POLICIES", "SCOPES", "ExpertAccesses", "OffloadStats", "OffloadLatency",
    "expert_accesses", "simulate_offload", "offload_latency", "oracle_predictions", "noisy_predictions",
    "PLACEMENT_POLICIES", "EXACT_MAX_EXPERTS", "Placement", "place_experts", "place_layers",
    "HybridExecutor", "NEAR_FORMATS", "calibrate_host", "compressed_bytes", "compressed_ops", "make_experts",
    "measure_paths", "time_hybrid",
    "MIXTRAL_EXPERT", "SWEEP_POLICIES", "ExpertShape", "budget_sweep", "policy_latencies",
]
