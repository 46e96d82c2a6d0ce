"""Benchmarks behind the `vmp bench-*` commands; they print tables, ratios measured in one run.

The defaults the command line shows are here, in a module that imports nothing, so that
building `vmp`'s parser starts no jax."""

from pathlib import Path

# Tokens of a 224 px VMP: an image (1 + 196), 8 frames (1 + 8 * 196), 16 frames (1 + 16 * 196).
DEFAULT_LENGTHS = (197, 1569, 3137)
# The recipe whose training pipeline `vmp bench-data` times.
DEFAULT_DATA_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "k400_vmp_ti_f8.py"
