"""Shared test set-up: the `gpu` marker is skipped, with its reason, where no SM80+ GPU + CuPy exists."""

from __future__ import annotations

import pytest

from samoyeds_lab import device_info


def pytest_collection_modifyitems(config, items):
    info = device_info()
    if info.backend == "cupy":
        return
    reason = "needs an SM80+ NVIDIA GPU with CuPy: " + "; ".join(info.reasons[:1] or ("none found",))
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
