"""The small generated AVA datasets of the AVA tests (`vmp make-synthetic --kind ava` at test
size) and the `--config.` overrides that point a shrunk `configs/ava_demo.py` at one."""

from vmp_jax.data import synthetic_ava


def generated_ava(tmp_path_factory, **spec) -> str:
    """A fresh folder holding the generated AVA dataset of `synthetic_ava.Spec(**spec)`."""
    root = str(tmp_path_factory.mktemp("ava"))
    synthetic_ava.make_dataset(synthetic_ava.Spec(root, **spec), workers=1)
    return root


def config_overrides(overrides: list[str], root: str) -> list[str]:
    """`--config.KEY=VALUE` arguments: `overrides` ("KEY=VALUE") and the dataset at `root`."""
    return [f"--config.{o}" for o in [*overrides, f"data.data_root={root}"]]
