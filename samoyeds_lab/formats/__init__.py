"""Compressed operands: N:M, Samoyeds (vector-wise rows + 2:4), VENOM V:N:M, CSR, dense; token selections.

Every weight format is a small frozen dataclass with a validating constructor, ``.to_dense()``,
``.nbytes`` and ``.density``. ``compress_*`` functions take a dense matrix that already follows the
pattern (prune first with :mod:`samoyeds_lab.prune`) and reject one that does not with a
:class:`~samoyeds_lab.errors.FormatError` naming the first offending row/group.
"""

from .nm import NMWeight, compress_nm, pack_nibbles, unpack_nibbles
from .samoyeds import SamoyedsWeight, compress_samoyeds
from .sptc import check_metadata, logical_metadata, mma_metadata, nibble_is_ordered
from .tokens import SENTINEL, TokenSelection
from .venom import CSRWeight, DenseWeight, VenomWeight, as_dense, compress_venom, to_csr

WEIGHT_FORMATS = (NMWeight, SamoyedsWeight, VenomWeight, CSRWeight, DenseWeight)

__all__ = [
    "NMWeight", "compress_nm", "pack_nibbles", "unpack_nibbles",
    "SamoyedsWeight", "compress_samoyeds",
    "VenomWeight", "compress_venom", "CSRWeight", "to_csr", "DenseWeight", "as_dense",
    "TokenSelection", "SENTINEL", "WEIGHT_FORMATS",
    "mma_metadata", "logical_metadata", "check_metadata", "nibble_is_ordered",
]
