"""libtpu for compiling on a machine without a TPU, and the subprocess that compiles with it.

libtpu at the version the installed jax pins (its `tpu` extra: libtpu 0.0.42.* for jax 0.10.2)
is installed with pip into a folder of the virtual environment (`<venv>/tpu-toolchain`, or
$VMP_TPU_TOOLCHAIN) that is not on the import path, as the CUDA toolchain is: a CPU user's jax
never loads it. `make setup` installs it; `vmp compile --target v5e ...` does on first use.

Compiles run in a subprocess (`python -m vmp_jax.tpucompile.worker`) with the folder on its
path, JAX_PLATFORMS=cpu (jax's own backend stays the CPU; `jax.experimental.topologies` gives
the compile-only TPU devices), libtpu's logs in a scratch folder (TPU_LOG_DIR), no metadata
server lookups (TPU_SKIP_MDS_QUERY) and ALLOW_MULTIPLE_LIBTPU_LOAD=1, so that two compiles
(or a test run's two workers) can load libtpu at once.
"""

import importlib.metadata
import os
import subprocess
import sys
import tempfile

from vmp_jax.gpucompile.toolchain import run_compile_worker

STAMP = ".installed"


def toolchain_dir() -> str:
    return os.environ.get("VMP_TPU_TOOLCHAIN") or os.path.join(sys.prefix, "tpu-toolchain")


def requirement() -> str:
    """The libtpu requirement of the installed jax's `tpu` extra ("libtpu==0.0.42.*")."""
    for line in importlib.metadata.requires("jax") or []:
        spec, _, marker = line.partition(";")
        if spec.replace(" ", "").startswith("libtpu") and "tpu" in marker:
            return spec.replace(" ", "")
    raise RuntimeError("the installed jax names no libtpu for its tpu extra")


def installed() -> bool:
    stamp = os.path.join(toolchain_dir(), STAMP)
    if not os.path.isfile(stamp):
        return False
    with open(stamp) as f:
        return f.read().strip() == requirement()


def install(*, echo=print) -> str:
    """Installs libtpu (about 700 MB on disk) unless it is there; returns its folder.
    RuntimeError with pip's message and the command to run when pip fails."""
    folder = toolchain_dir()
    if installed():
        return folder
    echo(f"installing libtpu for TPU compiles into {folder}: {requirement()}")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade"]
    command += ["--target", folder, requirement()]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(
            f"installing libtpu failed; TPU compiles need it. Install it with\n"
            f"  {' '.join(command)}\npip said:\n{done.stderr.strip()}"
        )
    with open(os.path.join(folder, STAMP), "w") as f:
        f.write(requirement() + "\n")
    return folder


def run_worker(task: dict, *, timeout: float = 3600) -> dict:
    """Runs one compile task (vmp_jax.tpucompile.worker) in a subprocess with libtpu; its
    JSON result. RuntimeError with the worker's output if it fails without one."""
    folder = install(echo=lambda m: print(m, file=sys.stderr))
    with tempfile.TemporaryDirectory(prefix="vmp-tpu-compile-") as scratch:
        env = dict(TPU_LOG_DIR=scratch, TPU_SKIP_MDS_QUERY="1", ALLOW_MULTIPLE_LIBTPU_LOAD="1")
        result, _ = run_compile_worker(
            "vmp_jax.tpucompile.worker", task, folder, env, timeout=timeout
        )
    return result


if __name__ == "__main__":  # `python -m vmp_jax.tpucompile.toolchain`: what `make setup` runs
    print(install(echo=print))
