"""Routing traces and hotness analytics: what the routers of an MoE model decided, and how skewed,
local and structured those decisions are.

::

    trace = record_routing(model, input_ids)        # one forward pass, hooks on every router
    trace.save("data/traces/tiny.npz")              # validated .npz (schema_version 1)
    trace = RoutingTrace.load("data/traces/tiny.npz")
    expert_frequency(trace)                         # [layers, E] share of each expert
    imbalance(trace).max_over_mean                  # [layers] straggler factor
    temporal_locality(trace).first                  # [layers] same first choice for consecutive tokens
    transition_matrix(trace, 0)                     # [E, E] first choice, layer 0 → layer 1
    tokens_per_expert(trace, 64).padded_fraction()  # kernel-tile padding at 64-token batches

Layering: ``routing`` imports ``moe``; ``moe`` never imports ``routing``.
"""

from .analytics import (
    Imbalance,
    TemporalLocality,
    TokensPerExpert,
    coactivation,
    expert_counts,
    expert_frequency,
    imbalance,
    repetition_rate,
    temporal_locality,
    tokens_per_expert,
    transition_matrix,
)
from .record import record_routing, routing_points
from .trace import FORMAT_NAME, SCHEMA_VERSION, RoutingTrace

__all__ = [
    "RoutingTrace", "SCHEMA_VERSION", "FORMAT_NAME",
    "record_routing", "routing_points",
    "expert_counts", "expert_frequency", "imbalance", "Imbalance", "repetition_rate", "temporal_locality",
    "TemporalLocality", "transition_matrix", "coactivation", "tokens_per_expert", "TokensPerExpert",
]
