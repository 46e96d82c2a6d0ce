"""Pallas GPU kernels for vmp_jax.

`pallas_kernels.selective_scan`: the selective scan (SPEC sections 1-4) as fused forward and
backward Pallas kernels with a custom VJP, registered as `algorithm="pallas"` in
`vmp_jax.ssm.selective_scan`.
"""
