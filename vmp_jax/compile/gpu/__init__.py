"""GPU targets (H100, A100): XLA's CUDA pipeline, Triton and ptxas, from a description of the
device; what ptxas reports of the kernels, and their occupancy."""
