"""What ptxas and XLA's thunk dump say about each kernel of a GPU compile.

XLA runs ptxas itself; the GPU toolchain's worker settings (`toolchain.cuda_env`) make it pass
`-v` and log ptxas' report (registers, spills, static shared memory, per kernel) and dump the
thunk sequence, which holds each kernel's launch: grid, threads and shared memory.
"""

import dataclasses
import glob
import os
import re


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


def kernel_reports(log: str, dump_dir: str) -> dict[str, KernelReport]:
    """Every kernel ptxas compiled, by name, with its launch where the dump has it."""
    launches = parse_launches(dump_dir)
    return {
        name: dataclasses.replace(
            report,
            **dict(zip(("grid", "threads", "shared_bytes"), launches.get(name, ()), strict=False)),
        )
        for name, report in parse_ptxas(log).items()
    }
