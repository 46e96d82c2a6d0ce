"""`vmp parity` on the generated videos, and the core package without torch."""

import os
import subprocess
import sys

from vmp_jax import cli
from vmp_jax.experiment import REPO_ROOT

DEMO = str(REPO_ROOT / "configs" / "demo.py")


def test_parity_on_every_validation_video(motion_dataset, capsys):
    """The exported PyTorch model picks the JAX model's top-1 class on every video."""
    flags = [
        f"--config.data.data_root={motion_dataset}",
        f"--config.data.val_list={os.path.join(motion_dataset, 'val.txt')}",
        f"--config.data.train_list={os.path.join(motion_dataset, 'train.txt')}",
        "--config.model.depth=2",
        "--config.model.embed_dim=48",
    ]
    assert cli.main(["parity", "--config", DEMO, *flags, "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "top-1 agrees on 8 of 8" in out, out
    relative = float(out.split("relative ")[1].split()[0])
    assert relative < 1e-4


def test_core_works_without_torch(tmp_path):
    """With torch and safetensors unimportable the package imports, and the interop commands
    say how to install them (exit code 2, no traceback)."""
    out = str(tmp_path / "x.pth")
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['safetensors'] = None\n"
        "from vmp_jax import cli\n"
        "import vmp_jax.interop.convert, vmp_jax.interop.parity\n"
        f"sys.exit(cli.main(['export', '--config', {DEMO!r}, '--out', {out!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "pip install torch==2.13.0" in result.stderr
    assert "Traceback" not in result.stderr
