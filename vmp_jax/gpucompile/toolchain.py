"""The CUDA compile toolchain, and the subprocess that compiles with it.

The toolchain is jax's CUDA plugin (jax-cuda12-plugin and jax-cuda12-pjrt at the installed
jax's version) and NVIDIA's ptxas (nvidia-cuda-nvcc-cu12), installed with pip into a folder of
the virtual environment (`<venv>/gpu-toolchain`, or $VMP_GPU_TOOLCHAIN) that is not on the
import path: a CPU user's jax never sees the plugin and prints no CUDA warnings. `make setup`
installs it; `vmp gpu-compile` does on first use.

Compiles run in a subprocess (`python -m vmp_jax.gpucompile.worker`) that has the toolchain on
its path and JAX_PLATFORMS=cpu (the plugin then registers its CUDA topology without looking for
a driver). XLA runs ptxas itself and, with its subprocess_compilation log at level 3, passes
`-v` and logs ptxas' report (registers, spills, per kernel); `--xla_dump_to` writes the thunk
sequence with each kernel's grid, threads and shared memory. ptxas is found by XLA (the
newest of the plugin's package and a system CUDA); the version used is reported.
"""

import dataclasses
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

from vmp_jax import xla_flags

NVCC_REQUIREMENT = "nvidia-cuda-nvcc-cu12==12.9.86"
STAMP = ".installed"


def toolchain_dir() -> str:
    return os.environ.get("VMP_GPU_TOOLCHAIN") or os.path.join(sys.prefix, "gpu-toolchain")


def requirements() -> list[str]:
    """The pip requirements of the toolchain for the installed jax."""
    import jax

    version = jax.__version__
    return [f"jax-cuda12-plugin=={version}", f"jax-cuda12-pjrt=={version}", NVCC_REQUIREMENT]


def installed() -> bool:
    stamp = os.path.join(toolchain_dir(), STAMP)
    if not os.path.isfile(stamp):
        return False
    with open(stamp) as f:
        return f.read().split() == requirements()


def install(*, echo=print) -> str:
    """Installs the toolchain (about 220 MB of wheels) unless it is there; returns its
    folder. RuntimeError with pip's message when pip fails."""
    folder = toolchain_dir()
    if installed():
        return folder
    echo(f"installing the CUDA compile toolchain into {folder}: {' '.join(requirements())}")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade"]
    command += ["--target", folder, *requirements()]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"installing the GPU toolchain failed:\n{done.stderr.strip()}")
    with open(os.path.join(folder, STAMP), "w") as f:
        f.write(" ".join(requirements()) + "\n")
    return folder


@dataclasses.dataclass(frozen=True)
class KernelReport:
    """What ptxas and XLA's thunk dump say about one kernel."""

    name: str
    registers: int
    spill_store_bytes: int
    spill_load_bytes: int
    static_shared_bytes: int
    grid: tuple[int, int, int] | None = None
    threads: tuple[int, int, int] | None = None
    shared_bytes: int | None = None  # what the launch asks for (Triton's dynamic smem)


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")
_PTXAS = re.compile(r"Using (\S*ptxas) with version (\S+)")
_LAUNCH = re.compile(
    r"kCustomKernel.*?\] (\S+) grid: \[(\d+), (\d+), (\d+)\] threads: \[(\d+), (\d+), (\d+)\]"
    r"\s+shared_memory: (\d+) bytes"
)


def parse_ptxas(log: str) -> dict[str, KernelReport]:
    """{kernel name: report} from ptxas' -v report as XLA logs it."""
    reports, name, spills = {}, None, (0, 0)
    for line in log.splitlines():
        if found := _ENTRY.search(line):
            name, spills = found.group(1), (0, 0)
        elif name and (found := _SPILLS.search(line)):
            spills = (int(found.group(2)), int(found.group(3)))
        elif name and (found := _USED.search(line)):
            smem = int(found.group(2) or 0)
            reports[name] = KernelReport(name, int(found.group(1)), *spills, smem)
            name = None
    return reports


def ptxas_version(log: str) -> str:
    found = _PTXAS.findall(log)
    return f"{found[-1][0]} {found[-1][1]}" if found else "unknown"


def parse_launches(dump_dir: str) -> dict[str, tuple]:
    """{kernel name: (grid, threads, shared bytes)} from XLA's thunk sequence dump."""
    launches = {}
    for path in glob.glob(os.path.join(dump_dir, "*thunk_sequence.txt")):
        with open(path) as f:
            for found in _LAUNCH.finditer(f.read()):
                n = [int(x) for x in found.groups()[1:]]
                launches[found.group(1)] = (tuple(n[:3]), tuple(n[3:6]), n[6])
    return launches


def die_with_parent() -> None:
    """In the worker, before it runs: the kernel sends it SIGTERM when `vmp gpu-compile`
    dies, so that a stopped command leaves no compile running (Linux; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclasses.dataclass(frozen=True)
class WorkerResult:
    result: dict  # what the worker printed
    kernels: dict[str, KernelReport]  # every kernel ptxas compiled, with its launch
    ptxas: str  # the ptxas binary and version XLA used


def run_compile_worker(module: str, task: dict, folder: str, env: dict, *, timeout: float):
    """Runs `python -m module` with `task` as JSON on stdin, `folder` (a toolchain) first on
    its path, JAX_PLATFORMS=cpu, no compilation cache (figures come from a real compile) and
    `env` set; it dies with this process. Returns (the last JSON line it printed, its stderr);
    RuntimeError with its output if it fails without one."""
    full = dict(os.environ)
    full.update(
        JAX_PLATFORMS="cpu",
        JAX_ENABLE_COMPILATION_CACHE="false",
        PYTHONPATH=os.pathsep.join([folder, full.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        **env,
    )
    done = subprocess.run(
        [sys.executable, "-m", module],
        input=json.dumps(task),
        capture_output=True,
        text=True,
        env=full,
        timeout=timeout,
        preexec_fn=die_with_parent,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = "\n".join((done.stderr + done.stdout).strip().splitlines()[-20:])
        raise RuntimeError(f"the compile worker {module} failed (exit {done.returncode}):\n{tail}")
    return json.loads(lines[-1]), done.stderr


def run_worker(task: dict, *, timeout: float = 3600, dump: bool = False) -> WorkerResult:
    """Runs one compile task (vmp_jax.gpucompile.worker) for a target, in a subprocess with
    the toolchain; RuntimeError with its output if it fails without a result."""
    folder = install(echo=lambda m: print(m, file=sys.stderr))
    with tempfile.TemporaryDirectory(prefix="vmp-gpu-compile-") as scratch:
        env = dict(
            TF_CPP_MIN_LOG_LEVEL="0",
            TF_CPP_VMODULE="subprocess_compilation=3",  # ptxas' report, in XLA's log
            XLA_FLAGS=xla_flags.with_flags(f"--xla_dump_to={scratch}" if dump else ""),
        )
        result, log = run_compile_worker(
            "vmp_jax.gpucompile.worker", task, folder, env, timeout=timeout
        )
        launches = parse_launches(scratch) if dump else {}
    kernels = {
        name: dataclasses.replace(
            report,
            **dict(zip(("grid", "threads", "shared_bytes"), launches.get(name, ()), strict=False)),
        )
        for name, report in parse_ptxas(log).items()
    }
    return WorkerResult(result, kernels, ptxas_version(log))


if __name__ == "__main__":  # `python -m vmp_jax.gpucompile.toolchain`: what `make setup` runs
    print(install(echo=print))
