"""Pruning: choose which weights to keep for any supported sparsity pattern, by magnitude or Wanda.

Three layers, each usable on its own::

    S    = magnitude_scores(W)            # |W|                      (fp32)
    S    = wanda_scores(W, X)             # |W| · ||X[:, j]||₂        (fp32, X = calibration inputs)
    mask = samoyeds_mask(S, n=1, m=2, vector=128)      # or nm_mask / venom_mask / unstructured_mask
    mask = prune_mask(W, "samoyeds", method="wanda", acts=X)            # scores + mask in one call
    op   = sparsify(W, "2:4", method="wanda", acts=X)  # compressed operand, op.to_dense() == W ⊙ mask
    err  = reconstruction_error(W, mask, X)            # ||(W ⊙ ¬mask) Xᵀ||_F / ||W Xᵀ||_F

Paired projections (the gate and up weights of one SwiGLU expert) share one Samoyeds row selection::

    mg, mu = prune_masks_joint([Wg, Wu], "samoyeds", method="wanda", acts=X, vector=32)
    live   = live_neuron_fraction(mg, mu, vector=32)   # neurons whose gate and up both keep weights

Masks keep exactly the pattern's number of elements; equal scores are resolved by lower index.
Pattern spellings: ``"n:m"`` (e.g. ``"2:4"``), ``"nm"``, ``"samoyeds"``, ``"venom"``, ``"unstructured"``,
``"dense"`` (see :func:`parse_pattern`).
"""

from .calibration import outlier_activations
from .api import METHODS, PATTERNS, parse_pattern, prune_mask, sparsify
from .masks import nm_mask, samoyeds_mask, samoyeds_masks_joint, top_n_mask, unstructured_mask, venom_mask
from .metrics import LiveNeurons, live_neuron_fraction, reconstruction_error
from .joint import JOINT_METHODS, prune_masks_joint, sparsify_joint
from .scores import magnitude_scores, wanda_scores

__all__ = [
    "magnitude_scores",
    "wanda_scores",
    "nm_mask",
    "samoyeds_mask",
    "samoyeds_masks_joint",
    "venom_mask",
    "unstructured_mask",
    "top_n_mask",
    "prune_mask",
    "sparsify",
    "parse_pattern",
    "reconstruction_error",
    "live_neuron_fraction",
    "LiveNeurons",
    "prune_masks_joint",
    "sparsify_joint",
    "JOINT_METHODS",
    "PATTERNS",
    "METHODS",
    "outlier_activations",
]
