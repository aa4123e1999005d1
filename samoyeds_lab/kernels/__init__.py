"""GPU kernels (CuPy RawModules over ``kernels/*.cu``) and the tile constants they share with the emulator.

The CuPy loaders arrive with the kernels; this package already holds :mod:`.tiles`, the tile sizes the
CPU ``mma.sp`` emulator and the CUDA sources agree on. Nothing here imports CuPy at import time.
"""
