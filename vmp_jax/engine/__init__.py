"""What training and evaluation both stand on: the train state (`state.Trainer`: model,
optimiser and EMA, placed by logical axis names), its mesh and shardings (`sharding`), the
optimiser (`optim`), on-device batch mixing (`mixing`), the jitted train and eval steps
(`steps`), Orbax checkpoints (`checkpoint`) and their conversion between block layouts
(`relayout`), and the clean stop on SIGTERM or SIGINT (`preemption`). `vmp_jax.train` (the
loop) and `vmp_jax.evaluate` import it; it imports neither."""
