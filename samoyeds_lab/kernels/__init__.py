"""GPU kernels (CuPy RawModules over ``kernels/*.cu``) and the tile constants they share with the emulator.

The CuPy loaders arrive with the kernels. The tile sizes the CUDA sources and the CPU ``mma.sp`` emulator
agree on live in :mod:`samoyeds_lab.tiles` (a leaf module, so ``formats`` and ``reference`` can import
them without importing anything above them). Nothing here imports CuPy at import time.
"""
