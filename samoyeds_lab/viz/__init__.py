"""Figures and interactive panels for the labs.

Pure figure builders (return ``plotly.graph_objects.Figure``, testable through ``fig.to_dict()``) live in
topic modules such as :mod:`samoyeds_lab.viz.sparsity`; ipywidgets panels built on them live in
:mod:`samoyeds_lab.viz.panels`. Nothing else in the package imports ``viz``.
"""

from .panels import METHODS, PATTERNS, SparsityPanel, SparsityView
from .sparsity import (
    COLORS,
    activation_scale_figure,
    bytes_bar,
    decode_metadata_word,
    error_bar,
    mask_heatmap,
    message_figure,
    metadata_word_figure,
    values_heatmap,
)

__all__ = [
    "COLORS",
    "METHODS",
    "PATTERNS",
    "SparsityPanel",
    "SparsityView",
    "activation_scale_figure",
    "bytes_bar",
    "decode_metadata_word",
    "error_bar",
    "mask_heatmap",
    "message_figure",
    "metadata_word_figure",
    "values_heatmap",
]
