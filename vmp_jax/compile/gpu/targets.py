"""The GPUs `vmp compile` compiles for, as XLA's `GpuTargetConfigProto` describes a device.

The figures are NVIDIA's published ones for each part (the same as XLA's own target specs):
streaming multiprocessors (SMs), registers, shared memory and threads per SM, memory size and
bandwidth. They are all XLA needs to compile without the device, and all the occupancy
calculation needs.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Target:
    name: str  # what the device reports, e.g. "NVIDIA H100 80GB HBM3"
    compute_capability: tuple[int, int]
    sms: int
    memory_bytes: int
    bandwidth_bytes_per_s: int
    l2_bytes: int
    clock_ghz: float
    fp32_units_per_sm: int
    shared_memory_per_sm: int  # bytes usable by blocks
    shared_memory_per_block_optin: int
    registers_per_sm: int = 65536
    max_threads_per_sm: int = 2048
    max_blocks_per_sm: int = 32
    threads_per_warp: int = 32

    @property
    def arch(self) -> str:
        """The ptxas architecture, e.g. sm_90a (Hopper's arch-specific features on)."""
        major, minor = self.compute_capability
        return f"sm_{major}{minor}" + ("a" if major >= 9 else "")

    @property
    def max_warps_per_sm(self) -> int:
        return self.max_threads_per_sm // self.threads_per_warp

    def config_text(self) -> str:
        """The GpuTargetConfigProto, as text, that XLA compiles for."""
        major, minor = self.compute_capability
        return f"""gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: {self.threads_per_warp}
  shared_memory_per_block: 49152
  shared_memory_per_core: {self.shared_memory_per_sm}
  threads_per_core_limit: {self.max_threads_per_sm}
  core_count: {self.sms}
  fpus_per_core: {self.fp32_units_per_sm}
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {self.bandwidth_bytes_per_s}
  l2_cache_size: {self.l2_bytes}
  clock_rate_ghz: {self.clock_ghz}
  device_memory_size: {self.memory_bytes}
  shared_memory_per_block_optin: {self.shared_memory_per_block_optin}
  cuda_compute_capability {{
    major: {major}
    minor: {minor}
  }}
  registers_per_core_limit: {self.registers_per_sm}
  registers_per_block_limit: {self.registers_per_sm}
}}
platform_name: "CUDA"
dnn_version_info {{
  major: 9
  minor: 1
}}
device_description_str: "{self.name}"
"""


TARGETS = {
    "h100": Target(
        name="NVIDIA H100 80GB HBM3",
        compute_capability=(9, 0),
        sms=132,
        memory_bytes=84_942_979_072,
        bandwidth_bytes_per_s=3_352_320_000_000,
        l2_bytes=50 * 2**20,
        clock_ghz=1.98,
        fp32_units_per_sm=128,
        shared_memory_per_sm=228 * 2**10,
        shared_memory_per_block_optin=227 * 2**10,
    ),
    "a100": Target(
        name="NVIDIA A100-SXM4-80GB",
        compute_capability=(8, 0),
        sms=108,
        memory_bytes=85_100_068_864,
        bandwidth_bytes_per_s=2_039_040_000_000,
        l2_bytes=40 * 2**20,
        clock_ghz=1.41,
        fp32_units_per_sm=64,
        shared_memory_per_sm=164 * 2**10,
        shared_memory_per_block_optin=163 * 2**10,
    ),
}


def get(name: str) -> Target:
    """The target called `name`; ValueError listing the known ones otherwise."""
    if name not in TARGETS:
        raise ValueError(f"unknown GPU target {name!r}; known targets: {', '.join(TARGETS)}")
    return TARGETS[name]
