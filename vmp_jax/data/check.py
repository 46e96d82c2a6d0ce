"""`vmp data-check`: run a config's input pipeline and report what it produces.

Prints each batch's arrays (shape, dtype, value range), the clips/s after the first batch (which
includes starting the workers), and how many videos were skipped and why, so that a dataset's
problems show up before a training run is launched on it.
"""

import collections
import re
import time

import numpy as np

from vmp_jax.data import pipeline, sources

_REASON = re.compile(r": ([^:(]+?)(?: \(|:|$)")


def skip_reason(error: str) -> str:
    """'path: truncated: decoded ...' -> 'truncated'."""
    found = _REASON.search(error.rsplit("/", 1)[-1]) or _REASON.search(error)
    return found.group(1).strip() if found else error


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
    skipped, reasons, clips = 0, collections.Counter(), 0
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
                out(f"  skipped {error}")
                reasons[skip_reason(error)] += 1
    elapsed = time.perf_counter() - first
    rate = clips / elapsed if clips else float("nan")
    out(f"first batch after {first - start:.2f} s; then {rate:.1f} clips/s over {clips} clips")
    out(f"skipped videos: {skipped}" + "".join(f"\n  {n} x {r}" for r, n in reasons.items()))
    return {"skipped": skipped, "reasons": dict(reasons), "clips_per_s": rate}


def _clips(batch: dict) -> int:
    video = batch["video"]
    return int(np.prod(video.shape[:-4]))  # train (B,), test (B, V)
