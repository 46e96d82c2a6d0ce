"""Compile the CPU kernels on first use and register them with XLA.

`selective_scan.cc` is built with the machine's C++ compiler (`$CXX`, else c++, g++ or clang++)
for this CPU (-march=native) against the XLA FFI headers that jaxlib ships, into a cache
directory, once per source, compiler, flags, jaxlib version and CPU: later processes load the
cached library in milliseconds. The cache is `$VMP_KERNEL_CACHE`, else
`$XDG_CACHE_HOME/vmp_jax` or `~/.cache/vmp_jax`. A machine with no compiler still runs every
other algorithm: `status()` says why the kernels are unavailable, and `auto` does not pick them.

    python -m cpu_kernels.build      # build now (make setup does), print the library's path
"""

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jaxlib

SOURCE = Path(__file__).with_name("selective_scan.cc")
TARGETS = ("VmpScanForward", "VmpScanForwardSaving", "VmpScanBackward")  # handler symbols


class KernelUnavailable(RuntimeError):
    """The CPU kernels cannot be built or loaded here (no compiler, a compile error)."""


def compiler() -> str | None:
    """The C++ compiler to use: $CXX, else the first of c++, g++, clang++ on PATH."""
    if os.environ.get("CXX"):
        return shutil.which(os.environ["CXX"])
    return next((p for name in ("c++", "g++", "clang++") if (p := shutil.which(name))), None)


def flags() -> list[str]:
    arch = "-mcpu=native" if platform.machine() in ("arm64", "aarch64") else "-march=native"
    include = jax.ffi.include_dir()
    return ["-O3", arch, "-std=c++17", "-fopenmp-simd", "-shared", "-fPIC", f"-I{include}"]


def _cpu_identity() -> str:
    """What -march=native compiles for: the CPU's feature flags where Linux lists them."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def cache_dir() -> Path:
    if os.environ.get("VMP_KERNEL_CACHE"):
        return Path(os.environ["VMP_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vmp_jax"


def library_path(cxx: str) -> Path:
    """The cached library for this source, compiler, flags, jaxlib and CPU."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), cxx.encode(), " ".join(flags()).encode()):
        key.update(part)
    key.update(f"{jaxlib.__version__} {platform.machine()} {_cpu_identity()}".encode())
    return cache_dir() / f"selective_scan-{key.hexdigest()[:16]}.so"


def build() -> Path:
    """The compiled library, compiling it first if the cache has none (KernelUnavailable if it
    cannot be). Compiles to a temporary file and renames it, so concurrent processes never load
    a half-written library."""
    cxx = compiler()
    if cxx is None:
        raise KernelUnavailable("no C++ compiler found (set $CXX, or install g++ or clang++)")
    path = library_path(cxx)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    command = [cxx, *flags(), str(SOURCE), "-o", tmp]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        os.unlink(tmp)
        raise KernelUnavailable(f"compiling {SOURCE.name} failed:\n{done.stderr.strip()[-2000:]}")
    os.replace(tmp, path)
    return path


@functools.cache
def _load() -> Path | KernelUnavailable:
    """The registered library, or why there is none (kept, so a failed compile is not retried)."""
    try:
        path = build()
        library = ctypes.cdll.LoadLibrary(str(path))
    except OSError as error:
        return KernelUnavailable(f"loading the CPU kernels failed: {error}")
    except KernelUnavailable as error:
        return error
    for name in TARGETS:
        capsule = jax.ffi.pycapsule(getattr(library, name))
        jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    return path


def load() -> Path:
    """Build (once per machine) and register the kernels (once per process); KernelUnavailable
    naming the reason if that cannot be done."""
    loaded = _load()
    if isinstance(loaded, KernelUnavailable):
        raise loaded
    return loaded


def status() -> str | None:
    """None when the kernels are available here, else why not."""
    loaded = _load()
    return str(loaded) if isinstance(loaded, KernelUnavailable) else None


if __name__ == "__main__":
    try:
        print(load())
    except KernelUnavailable as error:
        sys.exit(f"CPU kernels unavailable: {error}")
