"""Bad inputs for joint gate/up selection (:mod:`samoyeds_lab.prune.joint`, ``samoyeds_masks_joint``) and the
live-neuron metric."""

from __future__ import annotations

import math

import pytest
import torch

from samoyeds_lab.moe import MoEBlock, SwiGLUExperts
from samoyeds_lab.prune import live_neuron_fraction, prune_masks_joint, samoyeds_masks_joint, sparsify_joint

from .harness import case, ids, run_case

W = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
X = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
S = W.abs()
NAN_S = S.clone()
NAN_S[2, 5] = math.nan
G = S > 0.5

CASES = [
    case("prune.samoyeds_masks_joint", "a tensor, not a list", lambda: samoyeds_masks_joint(S, vector=16),
         TypeError, "scores_list"),
    case("prune.samoyeds_masks_joint", "empty list", lambda: samoyeds_masks_joint([], vector=16), ValueError,
         "scores_list"),
    case("prune.samoyeds_masks_joint", "shapes differ", lambda: samoyeds_masks_joint([S, S[:, :16]], vector=16),
         ValueError, "scores_list[1]"),
    case("prune.samoyeds_masks_joint", "int scores", lambda: samoyeds_masks_joint([S, S.int()], vector=16),
         TypeError, "scores_list[1]"),
    case("prune.samoyeds_masks_joint", "NaN score", lambda: samoyeds_masks_joint([S, NAN_S], vector=16),
         ValueError, "scores_list[1]"),
    case("prune.samoyeds_masks_joint", "vector 12 does not divide 32", lambda: samoyeds_masks_joint([S, S], vector=12),
         ValueError, "vector"),
    case("prune.samoyeds_masks_joint", "n = m", lambda: samoyeds_masks_joint([S, S], n=2, m=2, vector=16),
         ValueError, "n"),
    case("prune.prune_masks_joint", "one weight, not a list", lambda: prune_masks_joint(W, vector=16), TypeError,
         "weights"),
    case("prune.prune_masks_joint", "shapes differ", lambda: prune_masks_joint([W, W.T], vector=8), ValueError,
         "weights[1]"),
    case("prune.prune_masks_joint", "method 'bogus'", lambda: prune_masks_joint([W, W], method="bogus", vector=16),
         ValueError, "method"),
    case("prune.prune_masks_joint", "obs without acts", lambda: prune_masks_joint([W, W], method="obs", vector=16),
         ValueError, "acts"),
    case("prune.prune_masks_joint", "wanda without acts", lambda: prune_masks_joint([W, W], method="wanda", vector=16),
         ValueError, "acts"),
    case("prune.prune_masks_joint", "magnitude with acts", lambda: prune_masks_joint([W, W], acts=X, vector=16),
         ValueError, "acts"),
    case("prune.prune_masks_joint", "acts width differs",
         lambda: prune_masks_joint([W, W], method="wanda", acts=X[:, :16], vector=16), ValueError, "acts"),
    case("prune.sparsify_joint", "3-D weights", lambda: sparsify_joint([W[None], W[None]], vector=16), ValueError,
         "weights[0]"),
    case("prune.sparsify_joint", "bad pattern", lambda: sparsify_joint([W, W], "bogus"), ValueError, "pattern"),
    case("prune.live_neuron_fraction", "float gate mask", lambda: live_neuron_fraction(S, G), TypeError, "gate_mask"),
    case("prune.live_neuron_fraction", "shapes differ", lambda: live_neuron_fraction(G, G[:4]), ValueError,
         "up_mask"),
    case("prune.live_neuron_fraction", "vector does not divide H", lambda: live_neuron_fraction(G, G, vector=12),
         ValueError, "vector"),
    case("prune.live_neuron_fraction", "1-D masks", lambda: live_neuron_fraction(G[0], G[0]), ValueError,
         "gate_mask"),
    case("moe.SwiGLUExperts.sparsify", "joint a string",
         lambda: SwiGLUExperts(2, 32, 32).sparsify("samoyeds", vector=16, joint="yes"), TypeError, "joint"),
    case("moe.MoEBlock.sparsify", "joint 0", lambda: MoEBlock(32, 32, 2, 1).sparsify("samoyeds", vector=16, joint=0),
         TypeError, "joint"),
    case("moe.SwiGLUExperts.live_neurons", "vector does not divide H",
         lambda: SwiGLUExperts(2, 32, 32).live_neurons(vector=12), ValueError, "vector"),
]

EXEMPT = {
    "prune.LiveNeurons": "a NamedTuple result type returned by live_neuron_fraction, not built from user input",
}


@pytest.mark.parametrize("c", CASES, ids=ids(CASES))
def test_case(c):
    run_case(c)
