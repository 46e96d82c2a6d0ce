"""`ScanBlocks`: the tiling of a chunked selective scan, one type for every algorithm that tiles.

The XLA `chunked` algorithm (vmp_jax.ssm.chunked) and the Pallas kernels both cut the sequence
into chunks of q tokens and the channels into blocks of c; the kernels also take Triton warps
and a sub-chunk. Each algorithm reads the fields it uses and checks them with `validate`. This
module depends on nothing, so both packages import it without going through the other.
"""

import dataclasses

# The algorithms whose work the block sizes tile; the others have nothing to tile.
TILED = ("chunked", "pallas")


@dataclasses.dataclass(frozen=True)
class ScanBlocks:
    """Work-unit sizes of a chunked scan.

    chunk_size: q, tokens per chunk. `chunked` keeps the state entering each chunk for its
      backward and does O(q) dense work per token; the kernels unroll a chunk and save its
      entering state likewise.
    channel_block: c, channels per block (`chunked`: per loop step, None for all at once, the
      largest divisor of D up to c is used; Pallas: per kernel instance, a power of two, None
      for D's next power of two, shrunk to it for small D).
    num_warps: Triton warps per kernel instance (Pallas only).
    subchunk_size: tokens whose (c, n) states a kernel holds at once (Pallas only): the
      backward walks a chunk back one sub-chunk at a time, recomputing each sub-chunk's
      entering state; the associative variant scans a sub-chunk in parallel. The largest
      divisor of chunk_size up to this is used.
    segments: how many segments of whole chunks the kernels cut the sequence into, each run
      by its own programs from the state (forward) or cotangent (backward) entering it
      (Pallas only; pallas_kernels/segments.py). None: enough for 4 waves on the GPU traced
      for, 1 elsewhere; 1: no split.
    tpu_channel_block: channels per TPU kernel instance, on the 128 lanes (Pallas on TPU
      only; a multiple of 128; all of D when D is smaller). The TPU kernels also take
      chunk_size (a multiple of 8) and variant; the other fields are
      the GPU's.

    The defaults serve both: for `chunked` they were chosen on CPU at (2, 3137, 384, 16), and
    for the kernels from `vmp compile kernels` on H100 and A100 (benchmarks/RESULTS.md).
    """

    chunk_size: int = 16
    channel_block: int | None = 32
    num_warps: int = 4
    subchunk_size: int = 2
    segments: int | None = None
    tpu_channel_block: int = 128

    def __post_init__(self):
        for name in ("chunk_size", "num_warps", "subchunk_size", "tpu_channel_block"):
            if getattr(self, name) < 1:
                raise ValueError(f"ScanBlocks: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("channel_block", "segments"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"ScanBlocks: {name} must be >= 1, got {value}")

    def validate(self, algorithm: str, backend: str | None = None) -> "ScanBlocks":
        """These sizes, checked for `algorithm` traced for `backend` (ValueError naming the
        field it cannot take). The TPU kernels' own checks, which depend on the input dtype,
        are `pallas_kernels.selective_scan_tpu.check_blocks`."""
        c = self.channel_block
        if algorithm == "pallas" and backend != "tpu" and c is not None and c & (c - 1):
            raise ValueError(
                f"ScanBlocks: channel_block must be a power of two for the Pallas kernels "
                f"(Triton tiles), got {c}"
            )
        return self

    @property
    def subchunk(self) -> int:
        """The sub-chunk used: the largest divisor of chunk_size up to subchunk_size."""
        q = self.chunk_size
        return max(s for s in range(1, min(self.subchunk_size, q) + 1) if q % s == 0)

    @classmethod
    def parse(cls, text: str) -> "ScanBlocks":
        """'q,c,w[,s[,g[,t]]]' (chunk, channel block, warps[, sub-chunk[, segments[, TPU
        channel block]]]), as the CLI takes them; ValueError naming the problem."""
        try:
            values = [int(x) for x in text.split(",")]
        except ValueError:
            raise ValueError(f"block sizes are q,c,w[,s[,g[,t]]] integers, got {text!r}") from None
        if len(values) not in (3, 4, 5, 6):
            raise ValueError(f"block sizes are q,c,w[,s[,g[,t]]], got {text!r}")
        return cls(*values)

    def as_tuple(self) -> tuple:
        return dataclasses.astuple(self)


DEFAULT_BLOCKS = ScanBlocks()
