"""How many segments the kernels cut the sequence into, so that the GPU gets enough programs.

A kernel program scans one (batch element, channel block) along the whole sequence, so a grid
of b x D/c programs is all the parallelism there is: at VMP-S's scan with batch 16 (16 x 768 =
12288 (batch, channel) rows in blocks of 32 = 384 programs) that is under one wave on an H100,
whatever the channel block (registers follow the (c, n) elements a thread holds, so an SM
holds about 128 channels of the backward kernel however they are tiled; RESULTS.md). Cutting
the sequence into S segments of whole chunks gives b x D/c x S programs. A segment needs the
state entering it (forward) or the cotangent carry entering it (backward): a summary kernel
reduces each segment to its affine map from zero, a scan over the S maps (in XLA) gives every
segment's entering value, and the main kernel runs each segment from it (selective_scan.py).

`segments_wanted` is the fewest segments that give `MIN_WAVES` waves even if every SM held
as many programs as the hardware allows (`resident_bound`): the real residency is never
higher, so the real grid has at least that many waves, without knowing the registers ptxas
will give. The cost of splitting is the summary pass (it reads u, delta and B, or dy, z, C
and delta, once more) and S entering states per row; off a GPU nothing is split.
"""

MIN_WAVES = 4
# sm_80 and sm_90: an SM holds at most 32 blocks and 64 warps.
MAX_BLOCKS_PER_SM = 32
MAX_WARPS_PER_SM = 64


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def resident_bound(num_warps: int) -> int:
    """The most programs of `num_warps` warps an SM can hold at once."""
    return max(1, min(MAX_BLOCKS_PER_SM, MAX_WARPS_PER_SM // num_warps))


def chunks_per_segment(num_chunks: int, segments: int) -> int:
    """m, chunks per segment, for at least `segments` segments of whole chunks (at most one
    per chunk); the segments are then cdiv(num_chunks, m), the last maybe shorter."""
    if segments < 1:
        raise ValueError(f"segments must be >= 1, got {segments}")
    return max(1, num_chunks // min(segments, num_chunks))


def segments_wanted(rows: int, num_warps: int, sms: int | None) -> int:
    """The fewest segments giving `MIN_WAVES` waves for `rows` programs per segment on `sms`
    SMs even at `resident_bound(num_warps)`; 1 when sms is None (no GPU)."""
    if sms is None:
        return 1
    return cdiv(MIN_WAVES * sms * resident_bound(num_warps), rows)
