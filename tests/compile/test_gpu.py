"""The GPU path compiled for H100 and A100 on this CPU machine (`vmp compile`, with the
CUDA compile toolchain `make setup` installs): the Pallas kernels compile without spilling and
with at least 25% occupancy, and the demo's and VMP-Ti's train steps compile and fit on one
and on eight H100s. Compiles take seconds to minutes: marked slow."""

import json
import os
import subprocess
import sys
import time

import pytest

from pallas_kernels.selective_scan import INFERENCE_UNROLL
from tests.compile import kernels_argv
from vmp_jax import cli
from vmp_jax.compile import programs, train
from vmp_jax.experiment import REPO_ROOT

pytestmark = pytest.mark.slow
DEMO = str(REPO_ROOT / "configs" / "demo.py")
TI = str(REPO_ROOT / "configs" / "k400_vmp_ti_f8.py")


@pytest.mark.parametrize("target", ["h100", "a100"])
@pytest.mark.parametrize("shape", [programs.TARGET_SHAPE, (2, 37, 48, 5)], ids=["target", "small"])
def test_kernels_compile_without_spills_at_a_quarter_occupancy(target, shape, capsys):
    assert cli.main(kernels_argv(target, shape)) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["target"] == target
    # Split into segments for the target's SMs: each pass has its summary kernel; the
    # inference forward (vmp eval, vmp predict) is a kernel of its own.
    passes = ["forward summary", "forward", "backward summary", "backward"]
    passes += ["inference forward summary", "inference forward"]
    assert [k["pass"] for k in report["kernels"]] == passes
    keys = {"name", "pass", "registers", "spill_store_bytes", "spill_load_bytes"}
    keys |= {"shared_memory_bytes", "grid", "threads", "occupancy", "waves", "last_wave_fill"}
    assert all(keys <= set(k) for k in report["kernels"])
    b, L, d, _ = shape
    channel_blocks = -(-d // min(32, 1 << (d - 1).bit_length()))
    # The training pass's kernels share one grid, the inference forward's theirs (its chunks
    # are INFERENCE_UNROLL x 16 tokens, so its segments may differ).
    segments = {}
    for k in report["kernels"]:
        assert k["spill_store_bytes"] == k["spill_load_bytes"] == 0, k
        assert k["occupancy"] >= 0.25, k
        assert k["registers"] <= 128 and k["threads"] == 128, k
        group = k["pass"].startswith("inference")
        segments.setdefault(group, k["grid"][1] // channel_blocks)
        assert k["grid"] == [b, channel_blocks * segments[group], 1], k
        if shape == programs.TARGET_SHAPE:  # the wave rule; a small shape has too few rows
            assert k["waves"] >= 4 or k["last_wave_fill"] >= 0.9, k
    if shape != programs.TARGET_SHAPE:  # as many as there are chunks: still under a wave
        assert segments == {False: -(-L // 16), True: -(-L // (16 * INFERENCE_UNROLL))}


@pytest.mark.parametrize(
    ("config", "depth"), [(DEMO, None), (TI, None), (TI, 2)], ids=["demo", "vmp_ti", "vmp_ti_2"]
)
def test_train_steps_compile_and_fit_on_one_and_eight_h100s(config, depth):
    """At 16 clips per GPU, one GPU: the train step compiles and fits. Eight GPUs hold no more
    per device than one: each runs the Pallas kernels on its own shard of the batch (a custom
    kernel left to XLA's partitioner makes every device gather the whole batch, GiBs more in
    every block). That is a property of the sharding, not of the depth, so VMP-Ti checks it
    with 2 of its 24 blocks (every width and the sequence length as in the recipe, the blocks
    looped as the recipe has them); the full model, all 24 blocks, compiles for one GPU with
    the blocks scanned (`model.scan_layers`: one block compiled, 30 s here against 70 for the
    looped 24, which `vmp compile table` compiles), as the demo compiles for both."""
    overrides = ["model.scan_layers=True"] if depth is None and config == TI else []
    overrides += [] if depth is None else [f"model.depth={depth}"]
    per_device = {}
    for devices in (1,) if config == TI and depth is None else (1, 8):
        figures = train.compile_train(config, overrides, "h100", devices, 16)
        assert figures.compiled, figures.error
        assert figures.fits and 0 < figures.per_device_bytes < figures.usable_bytes
        assert figures.per_device_batch == 16 and figures.devices == devices
        assert figures.algorithm == "pallas" and figures.kernel_calls > 0  # native kernels
        per_device[devices] = figures.per_device_bytes
    if 8 in per_device:
        assert per_device[8] < 1.1 * per_device[1] + 2**26, per_device  # + collective buffers
    keys = {"compiled", "error", "devices", "per_device_bytes", "device_memory_bytes"}
    assert keys | {"fits", "algorithm"} <= set(figures.as_json())


def test_bad_input_is_named_not_a_traceback(capsys):
    assert cli.main(["compile", "kernels", "--target", "h100", "--blocks", "16,24,4"]) == 2
    assert "channel_block must be a power of two for the Pallas kernels (Triton tiles), got 24" in (
        capsys.readouterr().err
    )
    assert cli.main(["compile", "kernels", "--target", "h100", "--dim", "0"]) == 2
    assert "--dim must be >= 1, got 0" in capsys.readouterr().err
    # The old name still runs, and says the new one first.
    assert cli.main(["gpu-compile", "kernels", "--target", "h100", "--dim", "0"]) == 2
    alias, error = capsys.readouterr().err.splitlines()
    assert alias.startswith("vmp gpu-compile is deprecated: it is now vmp compile kernels --target")
    assert error == "vmp gpu-compile: error: --dim must be >= 1, got 0"
    with pytest.raises(SystemExit):
        cli.main(["compile", "kernels", "--target", "v100"])
    assert "invalid choice: 'v100'" in capsys.readouterr().err
    argv = ["compile", "train", "--config", DEMO, "--target", "a100"]
    assert cli.main([*argv, "--per-device-batch", "60000"]) == 1  # about 100 GiB
    assert "does NOT fit" in capsys.readouterr().out
    assert cli.main([*argv, "--devices", "3"]) == 2  # 16 clips do not split over 3
    assert "data.batch_size (16) does not split over 3 devices" in capsys.readouterr().err


def test_cpu_users_meet_no_cuda_plugin():
    """The toolchain sits outside the import path: jax on CPU says nothing about CUDA."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "PYTHONPATH")}
    code = "import jax; print(jax.devices())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "CpuDevice" in done.stdout
    assert "cuda" not in (done.stderr + done.stdout).lower(), done.stderr


def _children(pid: int, marker: str) -> list[int]:
    """Processes whose parent is `pid` and whose command line contains `marker` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and marker in cmdline:
            found.append(int(entry))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_command_leaves_no_compile_running():
    argv = [sys.executable, "-m", "vmp_jax.cli", "compile", "kernels", "--target", "h100"]
    command = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (workers := _children(command.pid, "vmp_jax.compile.worker")):
            assert command.poll() is None and time.monotonic() < deadline, "no worker started"
            time.sleep(0.2)
    finally:
        command.kill()
        command.wait()
    deadline = time.monotonic() + 5  # SIGTERM'd by the kernel: gone, or a zombie unreaped
    while _state(workers[0]) not in ("gone", "Z") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _state(workers[0]) in ("gone", "Z"), f"the compile worker {workers[0]} still runs"


def _state(pid: int) -> str:
    """A process's state letter (R, S, Z, ...), or "gone"."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
