"""Expert offloading: hardware profiles, cost model, expert caches and policies.

Submodules
----------
``hardware``
    Hardware profiles (GPU, host, near-data, link) loaded from ``data/hardware/``.
``cost``
    Analytic cost of running an expert on the GPU path vs the near-data path.
``cache``
    :func:`simulate_cache`: replay an expert access trace through an LRU / FIFO / LFU / Belady / static
    cache and count hits, misses and bytes fetched.
"""

from .cache import POLICIES, CacheStats, flatten_layer_expert, simulate_cache
from .cost import (
    LayerCost,
    PathCost,
    crossover_tokens,
    gpu_path_cost,
    hot_set_placement,
    layer_cost,
    near_data_path_cost,
)
from .hardware import SCHEMA_VERSION, HardwareProfile, list_profiles, load_profile, profiles_dir

__all__ = [
    "CacheStats", "POLICIES", "simulate_cache", "flatten_layer_expert",
    "HardwareProfile", "list_profiles", "load_profile", "profiles_dir", "SCHEMA_VERSION",
    "PathCost", "LayerCost", "gpu_path_cost", "near_data_path_cost", "layer_cost", "hot_set_placement",
    "crossover_tokens",
]
