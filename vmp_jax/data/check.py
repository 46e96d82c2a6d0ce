"""`vmp data-check`: run a config's input pipeline and report what it produces.

Prints each batch's arrays (shape, dtype, value range), the clips/s after the first batch (which
includes starting the workers), and the unreadable files it met: each distinct file once with its
reason, counted apart from the skip events (a file drawn three times is one file, three skips),
so that a dataset's problems show up before a training run is launched on it. `--scan`
(`vmp_jax.data.scan`) checks every file instead of a few batches.
"""

import time

import numpy as np

from vmp_jax.data import decode, pipeline, scan, sources


def describe(batch: dict) -> list[str]:
    lines = []
    for key, value in batch.items():
        value = np.asarray(value)
        if value.dtype.kind in "fiub" and value.size:
            lo, hi = value.min(), value.max()
            lines.append(
                f"  {key:8s} {value.dtype!s:8s} {tuple(value.shape)}  [{lo:.3g}, {hi:.3g}]"
            )
        else:
            lines.append(f"  {key:8s} {value.dtype!s:8s} {tuple(value.shape)}")
    return lines


def run(config, *, split: str = "train", batches: int = 5, out=print) -> dict:
    """Reads `batches` batches of `split` ("train" or "val"); returns the counts it printed."""
    source = sources.open_source(config.data, split)
    make = pipeline.train_dataset if split == "train" else pipeline.test_dataset
    iterator = iter(make(config, source))
    out(f"{split}: {len(source)} videos from {config.data.source} source")
    try:
        return _report(iterator, split, batches, out)
    finally:
        iterator.close()  # stops the worker processes


def _report(iterator, split: str, batches: int, out) -> dict:
    skipped, bad, clips = 0, {}, 0
    start = first = time.perf_counter()
    for i in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:
            out(f"(the {split} set ends after {i} batches)")
            break
        if i == 0:
            first = time.perf_counter()
            out("batch 0:")
            out("\n".join(describe(batch)))
        else:
            clips += _clips(batch)
        skipped += int(np.sum(batch["skipped"]))
        for errors in batch["errors"]:
            for error in filter(None, str(errors).split("\n")):
                bad.setdefault(decode.parse_error(error)[0], error)
    elapsed = time.perf_counter() - first
    rate = clips / elapsed if clips else float("nan")
    out(f"first batch after {first - start:.2f} s; then {rate:.1f} clips/s over {clips} clips")
    out(f"skip events: {skipped}; distinct unreadable files: {len(bad)}")
    for line in scan.bad_file_lines(bad):
        out(line)
    reasons = dict(scan.reason_counts(bad))
    return {"skipped": skipped, "files": sorted(bad), "reasons": reasons, "clips_per_s": rate}


def _clips(batch: dict) -> int:
    video = batch["video"]
    return int(np.prod(video.shape[:-4]))  # train (B,), test (B, V)
