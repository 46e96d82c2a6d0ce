"""The TPU path compiled for v5e and v5p on this CPU machine (`vmp compile`, with the libtpu
`make setup` installs): Mosaic compiles the TPU kernels within the core's VMEM, VMP-Ti's train
step compiles and fits on v5e:2x2 at 16 clips per chip, a multi-host topology compiles the
multi-process program, and bad input is named. Compiles take seconds: marked slow.

The TPU compile worker reads XLA_FLAGS too: it compiles with the flags a user's would, not with
the suite's faster CPU compile (tests/conftest.FAST_CPU_COMPILE)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.compile import kernels_argv
from tests.conftest import FAST_CPU_COMPILE
from vmp_jax import cli
from vmp_jax.compile import targets, toolchain, train
from vmp_jax.compile.programs import TARGET_SHAPE
from vmp_jax.experiment import REPO_ROOT

pytestmark = pytest.mark.slow
DEMO = str(REPO_ROOT / "configs" / "demo.py")
TI = str(REPO_ROOT / "configs" / "k400_vmp_ti_f8.py")
KERNELS = ("selective_scan_tpu_fwd", "selective_scan_tpu_bwd", "selective_scan_tpu_fwd_inference")


@pytest.fixture(autouse=True)
def _users_xla_flags(monkeypatch):
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if f != FAST_CPU_COMPILE]
    monkeypatch.setenv("XLA_FLAGS", " ".join(flags))


@pytest.mark.parametrize("target", ["v5e", "v5p"])
@pytest.mark.parametrize("shape", [TARGET_SHAPE, (2, 37, 48, 5)], ids=["target", "small"])
def test_kernels_compile_within_the_cores_vmem(target, shape, capsys):
    assert cli.main(kernels_argv(target, shape)) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["compiled"] and out["error"] == ""
    assert out["device_kind"] == targets.get(target).name
    # The training pass runs the forward and the backward kernel, the inference pass one; each
    # compiled to an executable with machine code (what only a compile that ran produces).
    assert out["passes"]["training"]["kernel_calls"] == 2
    assert out["passes"]["inference"]["kernel_calls"] == 1
    for p in out["passes"].values():
        assert p["compiled"] and p["error"] == "" and p["memory"]["generated_code_bytes"] > 0
    assert set(out["kernels"]) == set(KERNELS)
    b, L, d, n = shape
    for name, k in out["kernels"].items():
        assert 0 < k["vmem_bytes"] < out["vmem_bytes_per_core"], name
        assert k["transcendentals"] >= b * L * d * n  # an exp per (token, channel, state)
        assert k["flops"] > 0 and k["bytes_accessed"] > 0
    for p in out["passes"].values():
        assert 0 < p["memory"]["argument_bytes"] < out["hbm_bytes_per_device"]


def test_vmp_ti_train_step_fits_a_v5e_host_at_16_clips_per_chip():
    """The recipe with its memory knobs (scanned, rematerialised blocks: libtpu compiles the
    24 looped blocks in about 2 minutes here; `vmp compile table` does the recipe as is)."""
    overrides = ["--config.model.scan_layers=True", "--config.model.remat=True"]
    f = train.compile_train(TI, overrides, "v5e", None, 16)
    assert f.compiled, f.error
    assert f.topology == "v5e:2x2" and f.devices == f.chips == 4 and f.hosts == 1
    assert f.algorithm == "pallas" and f.kernel_calls > 0  # auto on TPU: the TPU kernels
    assert f.fits and 0 < f.per_device_bytes < f.device_memory_bytes
    keys = {"compiled", "error", "devices", "per_device_bytes", "device_memory_bytes"}
    assert keys | {"fits", "algorithm"} <= set(f.as_json())


def test_a_multi_host_topology_compiles_the_multi_process_program(capsys):
    argv = ["compile", "train", "--config", DEMO, "--target", "v5e", "--topology", "v5e:4x4"]
    assert cli.main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hosts"] == 4 and out["devices"] == 16 and out["fits"]
    assert out["algorithm"] == "pallas" and out["kernel_calls"] > 0  # per chip, shard_map
    assert out["per_device_batch"] == 1  # the demo's 16 clips over 16 chips
    # This process's jax is untouched: still the CPU, and a scan runs on it.
    assert jax.default_backend() == "cpu"
    from vmp_jax.ssm import selective_scan

    x = jnp.ones((1, 4, 2))
    y = selective_scan(x, x, -jnp.ones((2, 3)), jnp.ones((1, 4, 3)), jnp.ones((1, 4, 3)))
    assert np.isfinite(np.asarray(y)).all()


def test_bad_input_is_named_not_a_traceback(capsys):
    argv = ["compile", "kernels", "--target", "v5e", "--blocks", "16,32,4,2,1,96"]
    assert cli.main(argv) == 2
    assert "tpu_channel_block must be a multiple of 128" in capsys.readouterr().err
    argv = ["compile", "kernels", "--target", "v5p", "--blocks", "12,32,4"]
    assert cli.main(argv) == 2  # a chunk's tokens are a block's rows: a multiple of 8
    assert "chunk_size must be a multiple of 8 for the TPU kernels" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["compile", "kernels", "--target", "v7x"])
    assert "invalid choice: 'v7x'" in capsys.readouterr().err
    train = ["compile", "train", "--config", DEMO, "--target", "v5e"]
    assert cli.main([*train, "--topology", "v6e:2x2"]) == 2
    assert "valid ones look like v5e:2x2, v5e:2x4" in capsys.readouterr().err
    assert cli.main([*train, "--topology", "v5e:3x3"]) == 2  # libtpu cannot lay it out
    err = capsys.readouterr().err
    assert "'v5e:3x3': INVALID_ARGUMENT" in err and "valid ones look like" in err
    assert cli.main([*train, "--devices", "2"]) == 2
    assert "a TPU target takes --topology" in capsys.readouterr().err
    assert cli.main([*train, "--per-device-batch", "60000"]) == 1  # about 150 GiB a chip
    out = capsys.readouterr().out
    assert "does NOT fit" in out and "GiB over" in out and "model.remat=True" in out


def test_missing_libtpu_is_an_error_with_the_install_command(tmp_path, monkeypatch, capsys):
    """Where libtpu is not installed and pip cannot get it, the command says how to."""
    monkeypatch.setenv("VMP_TPU_TOOLCHAIN", str(tmp_path / "tpu-toolchain"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # an empty folder: nothing to install
    assert cli.main(["compile", "kernels", "--target", "v5e"]) == 2
    err = capsys.readouterr().err
    assert "installing libtpu failed; TPU compiles need it. Install it with" in err
    (requirement,) = toolchain.TOOLCHAINS["tpu"].requirements()
    assert f"--target {tmp_path / 'tpu-toolchain'} {requirement}" in err


def test_cpu_users_meet_no_libtpu():
    """libtpu sits outside the import path: a plain jax process sees the CPU only."""
    code = "import jax; print(jax.devices())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and "CpuDevice" in done.stdout
    assert "tpu" not in (done.stderr + done.stdout).lower(), done.stderr
