"""Pallas GPU kernels for vmp_jax (the `pallas` scan algorithm arrives with its own issue)."""
