"""Test set-up: 8 fake CPU devices (for sharding tests) before jax starts, hypothesis profiles."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import pytest  # noqa: E402
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


@pytest.fixture(scope="session")
def motion_dataset(tmp_path_factory) -> str:
    """4 classes x 8 videos of 16 frames at 48 px: 24 train and 8 val videos (data_root;
    train.txt and val.txt inside)."""
    from vmp_jax.data import synthetic

    root = str(tmp_path_factory.mktemp("motion"))
    spec = synthetic.Spec(root, 4, 8, frames=16, height=48, width=48, val_fraction=0.25)
    synthetic.make_dataset(spec, workers=1)
    return root
