"""How the kernels cut the sequence into segments (pallas_kernels/segments.py)."""

import pytest

from pallas_kernels.segments import (
    MIN_WAVES,
    cdiv,
    chunks_per_segment,
    resident_bound,
    segments_wanted,
)


@pytest.mark.parametrize("num_chunks", [1, 2, 7, 99, 197])
@pytest.mark.parametrize("segments", [1, 2, 3, 22, 500])
def test_segments_cover_every_chunk_and_reach_the_count(num_chunks, segments):
    m = chunks_per_segment(num_chunks, segments)
    count = cdiv(num_chunks, m)
    assert 1 <= m <= num_chunks
    assert count >= min(segments, num_chunks)  # at least as many as asked, where chunks allow
    assert (count - 1) * m < num_chunks <= count * m  # no empty segment, none left out


@pytest.mark.parametrize("sms", [108, 132])
@pytest.mark.parametrize("warps", [1, 2, 4, 8])
@pytest.mark.parametrize(
    ("batch", "dim", "channels"), [(16, 768, 32), (2, 384, 32), (64, 4608, 64)]
)
def test_auto_segments_give_the_waves_even_at_full_residency(sms, warps, batch, dim, channels):
    rows = batch * dim // channels
    wanted = segments_wanted(rows, warps, sms)
    num_chunks = 99  # L 1569 in chunks of 16
    segments = cdiv(num_chunks, chunks_per_segment(num_chunks, wanted))
    waves = rows * segments / (sms * resident_bound(warps))
    assert waves >= MIN_WAVES or segments == num_chunks
    assert wanted == 1 or rows * (wanted - 1) < MIN_WAVES * sms * resident_bound(warps)


def test_no_gpu_no_split_and_bad_counts_named():
    assert segments_wanted(4, 4, None) == 1
    assert resident_bound(4) == 16 and resident_bound(1) == 32 and resident_bound(128) == 1
    with pytest.raises(ValueError, match="segments must be >= 1, got 0"):
        chunks_per_segment(5, 0)
