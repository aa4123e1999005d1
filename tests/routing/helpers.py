"""Hand-made traces shared by the routing tests."""

from __future__ import annotations

import torch

from samoyeds_lab.routing import RoutingTrace

# Layer 0 is perfectly balanced (every expert 3 of 12 slots); layer 1 is skewed (counts 3, 4, 3, 2).
IDS = [
    [[0, 1], [0, 2], [1, 0], [3, 2], [3, 1], [2, 3]],
    [[1, 0], [1, 2], [1, 3], [1, 0], [2, 0], [2, 3]],
]


def hand_trace(**kw) -> RoutingTrace:
    """L=2, T=6, k=2, E=4; weights 0.7/0.3 for every token."""
    ids = torch.tensor(IDS)
    w = torch.tensor([0.7, 0.3]).expand(2, 6, 2).clone()
    kw.setdefault("meta", {"source": "hand"})
    return RoutingTrace(ids, w, torch.arange(6) + 40, ("layers.0.mlp", "layers.1.mlp"), 4, **kw)


def random_trace(layers: int, tokens: int, k: int, experts: int, seed: int, *, skew: float = 0.0,
                 seq: list[int] | None = None, logits: bool = False) -> RoutingTrace:
    """A valid random trace; ``skew > 0`` makes low expert ids more likely."""
    g = torch.Generator().manual_seed(seed)
    prior = torch.exp(-skew * torch.arange(experts, dtype=torch.float64))
    ids = torch.stack([torch.stack([torch.multinomial(prior, k, replacement=False, generator=g) for _ in range(tokens)])
                       for _ in range(layers)])
    w = torch.rand(layers, tokens, k, generator=g).sort(dim=-1, descending=True).values
    lg = torch.randn(layers, tokens, experts, generator=g) if logits else None
    return RoutingTrace(ids, w, torch.randint(0, 256, (tokens,), generator=g), tuple(f"l{i}" for i in range(layers)),
                        experts, logits=lg, sequence_lengths=None if seq is None else torch.tensor(seq))
