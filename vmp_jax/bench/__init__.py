"""Benchmarks behind the `vmp bench-*` commands; they print tables, ratios measured in one run."""
