"""The compile toolchains, installed outside the import path, and the worker subprocess that
compiles with one.

A toolchain is what XLA needs to compile for a target family on a machine without its devices:
for GPUs jax's CUDA plugin (jax-cuda12-plugin and jax-cuda12-pjrt at the installed jax's
version) and NVIDIA's ptxas (nvidia-cuda-nvcc-cu12), about 220 MB; for TPUs libtpu at the
version the installed jax pins (its `tpu` extra: libtpu 0.0.42.* for jax 0.10.2), about
700 MB. Each is installed with pip into a folder of the virtual environment
(`<venv>/gpu-toolchain`, `<venv>/tpu-toolchain`, or $VMP_GPU_TOOLCHAIN, $VMP_TPU_TOOLCHAIN)
that is not on the import path: a CPU user's jax never loads the plugin or libtpu and prints
no CUDA or TPU warnings. `make setup` installs both (`python -m vmp_jax.compile.toolchain`);
`vmp compile` installs a target's on first use. Checking and installing hold a file lock
beside the folder (`<folder>.lock`): of two compiles started at once, one installs while the
other waits, then finds it installed.

Compiles run in a subprocess (`python -m vmp_jax.compile.worker`, `run_worker`) with the
toolchain first on its path, JAX_PLATFORMS=cpu (jax's own backend stays the CPU; the plugin
registers its CUDA topology without looking for a driver, libtpu gives compile-only TPU
devices), no compilation cache (figures come from a real compile), and each family's settings
(`Toolchain.worker_env`). It reads one task as JSON on stdin and prints one JSON line; it dies
with its parent, so that a stopped command leaves no compile running.
"""

import contextlib
import dataclasses
import fcntl
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable

from vmp_jax import xla_flags
from vmp_jax.compile import targets

STAMP = ".installed"  # written last: the requirements a finished install holds
NVCC_REQUIREMENT = "nvidia-cuda-nvcc-cu12==12.9.86"


def cuda_requirements() -> list[str]:
    """The CUDA toolchain's pip requirements for the installed jax."""
    import jax

    version = jax.__version__
    return [f"jax-cuda12-plugin=={version}", f"jax-cuda12-pjrt=={version}", NVCC_REQUIREMENT]


def libtpu_requirements() -> list[str]:
    """The libtpu requirement of the installed jax's `tpu` extra (["libtpu==0.0.42.*"])."""
    for line in importlib.metadata.requires("jax") or []:
        spec, _, marker = line.partition(";")
        if spec.replace(" ", "").startswith("libtpu") and "tpu" in marker:
            return [spec.replace(" ", "")]
    raise RuntimeError("the installed jax names no libtpu for its tpu extra")


def cuda_env(scratch: str, dump_to: str | None) -> dict:
    """XLA runs ptxas itself and, with its subprocess_compilation log at level 3, passes `-v`
    and logs ptxas' report (registers, spills, per kernel); `--xla_dump_to` writes the thunk
    sequence with each kernel's grid, threads and shared memory. XLA_FLAGS: vmp's own."""
    dump = f"--xla_dump_to={dump_to}" if dump_to else ""
    return dict(
        TF_CPP_MIN_LOG_LEVEL="0",
        TF_CPP_VMODULE="subprocess_compilation=3",  # ptxas' report, in XLA's log
        XLA_FLAGS=xla_flags.with_flags(dump),
    )


def libtpu_env(scratch: str, dump_to: str | None) -> dict:
    """libtpu's logs in the scratch folder, no metadata server lookups, and
    ALLOW_MULTIPLE_LIBTPU_LOAD=1 so that two compiles (or a test run's two workers) can load
    libtpu at once. XLA_FLAGS: the user's."""
    env = dict(TPU_LOG_DIR=scratch, TPU_SKIP_MDS_QUERY="1", ALLOW_MULTIPLE_LIBTPU_LOAD="1")
    if dump_to:
        env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={dump_to}".strip()
    return env


@dataclasses.dataclass(frozen=True)
class Toolchain:
    family: str  # the target family it compiles for: "gpu" or "tpu"
    what: str  # what it is, for messages: "libtpu"
    env_var: str  # names its folder when set
    folder_name: str  # its folder in the virtual environment otherwise
    requirements: Callable[[], list[str]]  # pip's requirements for the installed jax
    worker_env: Callable[[str, str | None], dict]  # (scratch, dump folder) -> worker settings

    def folder(self) -> str:
        return os.environ.get(self.env_var) or os.path.join(sys.prefix, self.folder_name)

    def installed(self) -> bool:
        stamp = os.path.join(self.folder(), STAMP)
        if not os.path.isfile(stamp):
            return False
        with open(stamp) as f:
            return f.read().split() == self.requirements()

    def install(self, *, echo=print) -> str:
        """Installs the toolchain unless it is there; returns its folder. The check and the
        install hold `<folder>.lock`, so that concurrent callers install it once. RuntimeError
        with pip's message and the command to run when pip fails."""
        folder = self.folder()
        if self.installed():
            return folder
        with _locked(folder.rstrip(os.sep) + ".lock"):
            if not self.installed():  # another process may have installed it while we waited
                self._pip_install(folder, echo)
        return folder

    def _pip_install(self, folder: str, echo) -> None:
        requirements = self.requirements()
        echo(f"installing {self.what} for {self.family.upper()} compiles into {folder}: "
             f"{' '.join(requirements)}")  # fmt: skip
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade"]
        command += ["--target", folder, *requirements]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(
                f"installing {self.what} failed; {self.family.upper()} compiles need it. "
                f"Install it with\n  {' '.join(command)}\npip said:\n{done.stderr.strip()}"
            )
        with open(os.path.join(folder, STAMP), "w") as f:
            f.write(" ".join(requirements) + "\n")


@contextlib.contextmanager
def _locked(path: str):
    """An exclusive lock on the file `path` (created, with its folder, if missing), held until
    the block ends; another process's lock on it makes this one wait."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


TOOLCHAINS = {
    "gpu": Toolchain(
        "gpu",
        "the CUDA compile toolchain",
        "VMP_GPU_TOOLCHAIN",
        "gpu-toolchain",
        cuda_requirements,
        cuda_env,
    ),
    "tpu": Toolchain(
        "tpu", "libtpu", "VMP_TPU_TOOLCHAIN", "tpu-toolchain", libtpu_requirements, libtpu_env
    ),
}


def die_with_parent() -> None:
    """In the worker, before it runs: the kernel sends it SIGTERM when its parent (`vmp
    compile`) dies, so that a stopped command leaves no compile running (Linux; elsewhere
    nothing)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


WORKER = "vmp_jax.compile.worker"


def run_worker(task: dict, *, dump_to: str | None = None, timeout: float = 3600):
    """Runs one compile task (`vmp_jax.compile.worker`) in a subprocess with the toolchain of
    its target's family (installed first if missing), XLA's dump in `dump_to` if given.
    Returns (the JSON line it printed, as a dict; its stderr: XLA's log); RuntimeError with
    its output if it fails without one."""
    toolchain = TOOLCHAINS[targets.family(task["target"])]
    folder = toolchain.install(echo=lambda m: print(m, file=sys.stderr))
    with tempfile.TemporaryDirectory(prefix="vmp-compile-") as scratch:
        env = dict(os.environ)
        env.update(
            JAX_PLATFORMS="cpu",
            JAX_ENABLE_COMPILATION_CACHE="false",
            PYTHONPATH=os.pathsep.join([folder, env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            **toolchain.worker_env(scratch, dump_to),
        )
        done = subprocess.run(
            [sys.executable, "-m", WORKER],
            input=json.dumps(task),
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            preexec_fn=die_with_parent,
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = "\n".join((done.stderr + done.stdout).strip().splitlines()[-20:])
        raise RuntimeError(f"the compile worker {WORKER} failed (exit {done.returncode}):\n{tail}")
    return json.loads(lines[-1]), done.stderr


def main(families) -> None:
    """Installs the toolchains of `families` (default: both), printing each folder."""
    for family in families or TOOLCHAINS:
        if family not in TOOLCHAINS:
            raise SystemExit(f"unknown target family {family!r}; valid: {', '.join(TOOLCHAINS)}")
        print(TOOLCHAINS[family].install(echo=print))


if __name__ == "__main__":  # `python -m vmp_jax.compile.toolchain [gpu] [tpu]`: `make setup`
    main(sys.argv[1:])
