"""vmp_jax: VideoMambaPro in JAX.

Shape legend used across the package (channels last):
  b batch, l tokens (time), d channels (d_inner), n SSM state, k chunks, q chunk length,
  t and s token indices (output and source) of a dense (l, l) matrix.
"""

__version__ = "0.1.0"
