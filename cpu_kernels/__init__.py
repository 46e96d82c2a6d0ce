"""C++ kernels for CPUs, called through XLA's FFI: the selective scan's `cpu` algorithm."""
