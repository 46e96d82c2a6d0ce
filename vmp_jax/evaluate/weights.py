"""Which weights an evaluation takes: "auto" (the EMA copy when the run kept one), "ema" or
"raw". Apart from `multiview.py`, which reads the checkpoint for them, so that `vmp eval --help`
and `vmp predict --help` list them without importing jax."""

WEIGHTS = ("auto", "ema", "raw")
