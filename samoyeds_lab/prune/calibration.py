"""Calibration activations for activation-aware pruning (Wanda) when no recorded ones are at hand."""

from __future__ import annotations

import torch

from .._checks import check_alloc, check_float, check_int, check_positive_int


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
    tokens = check_positive_int("tokens", tokens)
    channels = check_positive_int("channels", channels)
    seed = check_int("seed", seed, lo=0, hi=2**63 - 1)  # a torch.Generator seed is a signed 64-bit int
    if n_outliers is None:
        n_outliers = min(channels, max(2, round(0.004 * channels)))
    n_outliers = check_int("n_outliers", n_outliers, lo=0, hi=channels)
    outlier_scale = check_float("outlier_scale", outlier_scale, lo=0.0, lo_open=True)
    sigma = check_float("sigma", sigma, lo=0.0)
    check_alloc("tokens", (tokens, channels), torch.float32, what="activation matrix (tokens x channels)")
    gen = torch.Generator().manual_seed(seed)
    scales = torch.exp(sigma * torch.randn(channels, generator=gen))
    outliers = torch.randperm(channels, generator=gen)[:n_outliers]
    scales[outliers] = outlier_scale * scales.median()
    return torch.randn(tokens, channels, generator=gen) * scales
