"""`vmp data-check --scan`: find a dataset's unreadable videos once, before training on it.

Every distinct file of a source is opened and its first, middle and last frames decoded (the
last one is what a truncated file lacks; seeking makes this cheap however long the video), in
parallel threads. The result names each bad file once with its reason, however often the list
names it, and a list file can be rewritten without them.
"""

import collections
import concurrent.futures
import dataclasses
import os

from vmp_jax import storage
from vmp_jax.data import decode, listing


def _spot_check(num_frames: int) -> list[int]:
    return sorted({0, num_frames // 2, num_frames - 1})


def check_item(item) -> str:
    """'' if the item reads, else the DecodeError's message."""
    try:
        item.read(_spot_check)
    except decode.DecodeError as e:
        return str(e)
    return ""


def reason_counts(bad: dict[str, str]) -> collections.Counter:
    """Distinct bad files per reason, from {name: DecodeError message}."""
    return collections.Counter(decode.parse_error(e)[1] for e in bad.values())


def bad_file_lines(bad: dict[str, str]) -> list[str]:
    """The report of {name: DecodeError message}: a count per reason, then each file once."""
    counts = [f"  {n} x {reason}" for reason, n in sorted(reason_counts(bad).items())]
    return counts + [f"  {error}" for _, error in sorted(bad.items())]


@dataclasses.dataclass(frozen=True)
class ScanResult:
    """entries: list entries scanned; files: distinct files among them; bad: {name: error}."""

    entries: int
    files: int
    bad: dict[str, str]

    @property
    def reasons(self) -> collections.Counter:
        """Distinct bad files per reason."""
        return reason_counts(self.bad)

    def lines(self, what: str = "videos") -> list[str]:
        head = f"unreadable: {len(self.bad)} of {self.files} {what}"
        if self.entries != self.files:
            head += f" ({self.entries} list entries)"
        return [head, *bad_file_lines(self.bad)]


def scan(items, *, workers: int | None = None, progress=None) -> ScanResult:
    """Checks each distinct file (by name) of `items` once, `workers` threads at a time.

    Args:
      progress: called once per file checked (e.g. a progress bar's update).
    """
    distinct = {}
    for item in items:
        distinct.setdefault(item.name, item)
    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    bad = {}
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(check_item, item): name for name, item in distinct.items()}
        for future in concurrent.futures.as_completed(futures):
            if error := future.result():
                bad[futures[future]] = error
            if progress:
                progress()
    return ScanResult(len(items), len(distinct), bad)


def write_clean(list_file: str, data_root: str, bad_names, out: str, template=None) -> int:
    """Writes `list_file` without the entries whose file is in `bad_names` (comments and blank
    lines kept, lines as written); returns the number of entries left out."""
    bad_names = set(bad_names)
    entries = listing.list_entries(list_file, data_root, template or "img_{:05d}.jpg")
    kept = [line for line, item in entries if item is None or item.name not in bad_names]
    storage.write_text(out, "".join(f"{line}\n" for line in kept))
    return len(entries) - len(kept)
