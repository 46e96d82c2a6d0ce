"""Compiling for NVIDIA GPUs on a machine without one (`vmp gpu-compile`).

XLA compiles for a CUDA target from a description of the device alone: with the CUDA plugin
and NVIDIA's ptxas installed (the toolchain, `toolchain.py`, kept out of the ordinary
environment so that CPU users meet no CUDA plugin), `jax.experimental.topologies` gives
compile-only devices of a target (`targets.py`), and `jit(...).trace(...).lower().compile()`
runs XLA's whole GPU pipeline, Triton and ptxas included. What that yields:

  kernels.py    the Pallas selective-scan kernels' registers, spills, shared memory, launch
                dimensions, and from them occupancy and waves (`occupancy.py`)
  train.py      whether a config's real train step compiles for N devices, and its
                per-device memory

Static figures, not timings: they say a program will compile, fit and not spill.
"""
