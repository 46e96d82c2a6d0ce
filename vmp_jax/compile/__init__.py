"""Compiling for accelerators on a machine without one (`vmp compile ... --target T`).

XLA compiles for a target from a description of its devices alone, with the target family's
toolchain (`toolchain.py`: jax's CUDA plugin and NVIDIA's ptxas for GPUs, libtpu for TPUs),
kept out of the ordinary environment so that CPU users meet neither. A compile runs in a worker
subprocess (`worker.py`) that has the toolchain on its path and compiles for compile-only
devices of the target (`targets.py`: the GPU family's in `gpu/`, the TPU family's in `tpu/`):
`jit(...).trace(...).lower().compile()` runs XLA's whole pipeline for it (Triton and ptxas;
libtpu and Mosaic). What that yields:

  gpu/kernels.py, tpu/kernels.py   the selective-scan kernels at one scan shape: on GPUs their
                                   registers, spills, shared memory, occupancy and waves; on
                                   TPUs their VMEM and cost estimates, and whether Mosaic
                                   compiled them
  train.py                         whether a config's real train step compiles for a target's
                                   devices (N GPUs, or a TPU topology), and its memory per device
  table.py                         that for every K400 recipe, and the largest batch that fits

Static figures, not timings: they say a program will compile, fit and not spill.
"""
