"""Calibration activations for activation-aware pruning (Wanda) when no recorded ones are at hand."""

from __future__ import annotations

import math

import torch


def outlier_activations(
    tokens: int,
    channels: int,
    *,
    n_outliers: int | None = None,
    outlier_scale: float = 20.0,
    sigma: float = 0.5,
    seed: int = 0,
) -> torch.Tensor:
    """Synthetic layer inputs ``X [tokens, channels]`` with LLM-like per-channel scales and outlier channels.

    ``X[t, j] = s_j · z[t, j]`` with ``z ~ N(0, 1)`` and per-channel scales
    ``s_j = exp(sigma · g_j)``, ``g_j ~ N(0, 1)`` (log-normal: heavy-tailed across channels), except for
    ``n_outliers`` randomly chosen channels whose scale is ``outlier_scale · median(s)``. The outlier
    channels are the same for every token, as the large-magnitude features of LLMs are (Dettmers et al.,
    "LLM.int8()", 2022, report them as systematic per feature dimension and up to ~20× larger), which is
    the property Wanda's ``|W|·‖X_j‖`` score exploits (Sun et al., 2024).

    These are *synthetic* activations with that documented property, not recorded ones.

    Parameters
    ----------
    tokens, channels : int
        Output shape.
    n_outliers : int, optional
        Number of outlier channels (default ``max(2, round(0.004·channels))``, ≈ 16 of 4096).
    outlier_scale : float
        Outlier scale as a multiple of the median channel scale (default 20).
    sigma : float
        Log-normal spread of the ordinary channel scales (default 0.5).
    seed : int
        Seed of a private ``torch.Generator`` (the global RNG is untouched).

    Returns
    -------
    torch.Tensor
        fp32 ``[tokens, channels]``.
    """
    for name, v in (("tokens", tokens), ("channels", channels), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "seed" else 1):
            raise ValueError(f"{name}: expected a {'non-negative' if name == 'seed' else 'positive'} int, got {v!r}")
    if n_outliers is None:
        n_outliers = min(channels, max(2, round(0.004 * channels)))
    if isinstance(n_outliers, bool) or not isinstance(n_outliers, int) or not 0 <= n_outliers <= channels:
        raise ValueError(f"n_outliers: expected an int in [0, channels={channels}], got {n_outliers!r}")
    if not (isinstance(outlier_scale, (int, float)) and outlier_scale > 0 and math.isfinite(outlier_scale)):
        raise ValueError(f"outlier_scale: expected a positive finite number, got {outlier_scale!r}")
    if not (isinstance(sigma, (int, float)) and sigma >= 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma: expected a non-negative finite number, got {sigma!r}")
    gen = torch.Generator().manual_seed(seed)
    scales = torch.exp(sigma * torch.randn(channels, generator=gen))
    outliers = torch.randperm(channels, generator=gen)[:n_outliers]
    scales[outliers] = outlier_scale * scales.median()
    return torch.randn(tokens, channels, generator=gen) * scales
