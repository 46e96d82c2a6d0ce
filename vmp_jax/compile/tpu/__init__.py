"""TPU targets (v4, v5e, v5p, v6e): libtpu and Mosaic for compile-only devices of a topology;
the TPU kernels' VMEM and cost estimates."""
