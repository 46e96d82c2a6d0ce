"""An evaluation's batches through its eval step on every host, and the rows each host keeps
gathered onto all of them (`multiview.predict`, `detection.predict`).

Every host reads as many batches of the same size (the evaluation datasets pad the last), so
every host calls the eval step, is asked about preemption and gathers the same number of
times: the collectives line up. A host's rows are its part of each global batch, in process
order; after the gather every process holds every host's rows, as a single process would.
"""

import jax
import numpy as np

from vmp_jax.engine import preemption
from vmp_jax.multihost import collect


def gather_rows(dataset, step, rows, *, preempt=None) -> tuple[dict[str, np.ndarray], int]:
    """({name: every host's rows, concatenated in process order}, empty when there was no
    batch; the batches' skipped count summed over the processes).

    Args:
      dataset: this host's batches (each with "video" (b, ...) and "skipped" (b,)); the
        iterator is closed at the end, also on an error or a preemption.
      step: batch -> the eval step's output for the global batch, (global B, ...).
      rows: (batch, this host's output rows (b, ...)) -> {name: the rows to keep}.
      preempt: a `preemption.Preemption` asked after each batch: on a SIGTERM or SIGINT every
        process stops after the same batch and `Preempted` is raised, nothing gathered.
    """
    kept, skipped = [], 0
    iterator = iter(dataset)
    try:
        for number, batch in enumerate(iterator, 1):
            output = np.asarray(step(batch))  # (global B, ...)
            b = len(batch["video"])
            start = jax.process_index() * b
            kept.append(rows(batch, output[start : start + b]))
            skipped += int(batch["skipped"].sum())
            if preempt is not None and preempt.reached(number):  # every process, every batch
                raise preemption.Preempted(
                    f"evaluation stopped after batch {number} ({preempt.cause}): nothing "
                    "written; the same command evaluates again"
                )
    finally:
        iterator.close()
    names = list(kept[0]) if kept else []
    local = [np.concatenate([part[name] for part in kept]) for name in names]
    return dict(zip(names, collect.gather_rows(*local), strict=True)), collect.sum_over_processes(
        skipped
    )
