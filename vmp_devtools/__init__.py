"""Development tools: test equipment that is no part of the product (`vmp_jax`), shipped with
a checkout so that its benchmarks can use them (the GCS emulator of `vmp bench-data --bucket`)."""
