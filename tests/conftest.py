"""Test set-up: 8 fake CPU devices (for sharding tests) before jax starts, hypothesis profiles."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

from hypothesis import HealthCheck, settings  # noqa: E402

# Each example compiles new programs: no deadline, few examples, fresh random draws every run.
settings.register_profile(
    "default",
    deadline=None,
    max_examples=6,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
