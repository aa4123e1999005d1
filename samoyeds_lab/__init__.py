"""samoyeds-lab: learn and explore how Mixture-of-Experts inference is made fast.

Re-implements, in the open, Samoyeds (dual-side structured sparsity on Sparse Tensor Cores), SiDA-MoE
(data-aware expert offloading) and MoNDE (near-data hot/cold experts). Start with
``samoyeds_lab.device_info()`` and the notebooks in ``labs/``.
"""

from .device import DeviceInfo, device_info
from .errors import CorruptFileError, FormatError, SamoyedsLabError

__version__ = "0.1.0"

__all__ = ["device_info", "DeviceInfo", "SamoyedsLabError", "FormatError", "CorruptFileError", "__version__"]
