"""Where a training batch is written, and how a Grain worker hands it over without a copy.

`pipeline.LoadBatch` writes each clip straight into its part of one batch array (a frame
store's JPEG frames decoded into it). That array lives in a slot that is reused once the
consumer is done with the batch (`Slots`): memory the kernel has handed out already, so that a
batch costs no page faults. Grain's own hand-off from a worker copies each batch into a new
shared-memory object, which the kernel allocates and zeroes 4 KiB page by page on first touch
(tmpfs gets no transparent huge pages unless shmem_enabled allows them, as NumPy's large
arrays do): 17 ms of CPU for a 26 MB batch (8 clips on a 320 x 428 canvas) on the CI-sized VM,
more than a third of the JPEG decoding that fills it (benchmarks/RESULTS.md).

In the training process (`data.num_workers=0`) the slots are anonymous memory. In a Grain
worker they are files in /dev/shm: the batch travels as a `SlotRef` (a name and a shape), and
the training process maps each slot once and hands out the array in it (`Attach`, a map after
`mp_prefetch`). The batch's other arrays (labels, indices, crop plans) travel in the same slot,
after the batch array (`Slots.pack`), and the training process takes copies of them. Grain
would put each in a shared-memory object of its own, created, registered with Python's resource
tracker, mapped and unlinked in both processes: 2-4 ms of CPU for each batch of 8 clips on the
CI-sized VM, 0.3-0.5 ms a clip against the clip's 4.5 ms of reading and decoding (0.04 ms
packed). Pickled instead (Grain's `min_shm_size`), a batch's crop plans fill the queue's pipe,
whose feeder thread then holds a worker at exit until Grain kills it.

Ownership: a batch's arrays are the consumer's, as any NumPy array is. A slot is reused only
when the last reference to the array handed out is gone: the batch, any view of it (a slice or
reshape keeps its base), a jax array that aliases it on the CPU, a host-to-device copy in
flight (jax holds the array until the copy is done). A batch kept is never overwritten: with no
free slot another is made, up to MAX_SLOTS, and past that the batch is a new array (from a
worker, Grain's copy). A slot lost with its batch (Grain drops the batches in flight when an
iterator is restored or closed) is never reused.

Names: a worker's slot is unlinked from /dev/shm as soon as the training process has mapped it,
or by the worker when it exits if that never happened, or by Python's resource tracker once
every process is gone (a SIGKILL); where /dev/shm is missing, workers use Grain's hand-off.
"""

import atexit
import dataclasses
import logging
import math
import mmap
import os
import secrets
import threading
import weakref
from multiprocessing import resource_tracker

import numpy as np

log = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"
HEADER = mmap.PAGESIZE  # the slot's state in its first byte; the array page-aligned after it
FREE, TAKEN = 0, 1
MAX_SLOTS = 16  # per process; with 2 reader threads up to about 7 batches are in flight
ALIGN = 64  # bytes: where each of a batch's other arrays starts in its slot


@dataclasses.dataclass(frozen=True)
class SlotRef:
    """A batch array in a worker's slot, as it travels to the training process."""

    name: str  # the slot's file in SHM_DIR
    shape: tuple[int, ...]
    dtype: str
    offset: int = HEADER  # where the array starts in the slot
    copied: bool = False  # handed out as a copy: one of the batch's other arrays (`Slots.pack`)


def _pages(nbytes: int) -> int:
    """`nbytes` rounded up to whole pages."""
    return -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE


def extra_room(nbytes: int) -> int:
    """Bytes a worker's slot for an `nbytes` batch array keeps after it for the batch's other
    arrays: a sixteenth of it and 1 MiB (a batch of 8 clips on a 320 x 428 canvas has 26 MB of
    frames and 0.1 MB of crop plans). Only the pages written take memory (/dev/shm's files are
    sparse)."""
    return _pages(nbytes // 16 + (1 << 20))


class _Slot:
    """HEADER bytes (the state) and then the array: anonymous memory or, `shared`, a file in
    SHM_DIR that the training process maps by its name, with `extra_room` after the array for
    the batch's other arrays."""

    def __init__(self, nbytes: int, shared: bool):
        self.nbytes, self.name = nbytes, None
        if not shared:
            self.memory = mmap.mmap(-1, HEADER + nbytes)
            return
        self.name = f"vmp-batch-{os.getpid()}-{secrets.token_hex(6)}"
        path = os.path.join(SHM_DIR, self.name)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            size = HEADER + _pages(nbytes) + extra_room(nbytes)
            os.ftruncate(fd, size)
            self.memory = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        # Unlinked by the training process once mapped; else by this worker at exit, or by
        # Python's resource tracker once every process is gone (a SIGKILL), as Grain's are.
        resource_tracker.register(_posix_name(path), "shared_memory")
        atexit.register(_unlink, path)

    @property
    def free(self) -> bool:
        return self.memory[0] == FREE


class Slots:
    """The batch arrays of one process, reused once released: in the training process
    (anonymous memory, the array handed out itself) or, `shared`, in a Grain worker (files in
    SHM_DIR, a SlotRef handed out). Made on first use in each process: none are pickled with
    the dataset."""

    def __init__(self, shared: bool = False, max_slots: int = MAX_SLOTS):
        self.shared, self.max_slots = shared, max_slots
        self._slots: list[_Slot] = []
        self._lock = threading.Lock()  # Grain's reader threads take slots concurrently
        self._usable = not shared or os.path.isdir(SHM_DIR)

    def __getstate__(self) -> dict:
        return {"shared": self.shared, "max_slots": self.max_slots}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def take(self, shape: tuple[int, ...], dtype) -> tuple[np.ndarray, SlotRef | np.ndarray]:
        """(the array to write the batch into, what the batch holds in its place: the array, or
        from a worker a SlotRef). With no slot free, a new array (from a worker, Grain copies
        it to the training process)."""
        dtype = np.dtype(dtype)
        slot = self._free_slot(math.prod(shape) * dtype.itemsize)
        if slot is None:
            array = np.empty(shape, dtype)
            return array, array
        array = np.ndarray(shape, dtype, buffer=slot.memory, offset=HEADER)
        if self.shared:
            return array, SlotRef(slot.name, tuple(shape), dtype.str)
        handed_out(array, slot.memory)
        return array, array

    def pack(self, batch: dict) -> dict:
        """`batch` as it leaves this process: from a worker, its arrays other than the one in a
        slot (a SlotRef) copied into that slot after it, each as a SlotRef that `Attach` turns
        back into a copy of the array (so that keeping a label keeps no slot); the arrays that
        do not fit stay as they are (Grain's hand-off), as does a batch with no SlotRef."""
        ref = next((v for v in batch.values() if isinstance(v, SlotRef)), None)
        if ref is None:
            return batch
        with self._lock:
            slot = next(s for s in self._slots if s.name == ref.name)
        offset, end = HEADER + _pages(slot.nbytes), len(slot.memory)
        packed = dict(batch)
        for key, value in batch.items():
            if not isinstance(value, np.ndarray) or value.dtype.hasobject:
                continue  # not an array of fixed-size items (a SlotRef, a scalar): as it is
            if offset + value.nbytes > end:
                continue
            np.ndarray(value.shape, value.dtype, buffer=slot.memory, offset=offset)[...] = value
            packed[key] = SlotRef(slot.name, value.shape, value.dtype.str, offset, copied=True)
            offset += -(-value.nbytes // ALIGN) * ALIGN
        return packed

    def _free_slot(self, nbytes: int) -> _Slot | None:
        with self._lock:
            slot = next((s for s in self._slots if s.nbytes == nbytes and s.free), None)
            if slot is None and self._usable and len(self._slots) < self.max_slots:
                try:
                    slot = _Slot(nbytes, self.shared)
                except OSError as e:  # /dev/shm full or read-only: Grain's hand-off
                    log.warning("batches handed over by copy: no slot in %s (%s)", SHM_DIR, e)
                    self._usable = False
                    return None
                self._slots.append(slot)
            if slot is not None:
                slot.memory[0] = TAKEN
            return slot


def handed_out(array: np.ndarray, memory: mmap.mmap) -> np.ndarray:
    """`array`, a slot's (its base the slot's memory, so that views of it keep it alive), set to
    free the slot once it and every view of it are gone."""
    weakref.finalize(array, _release, memory)
    return array


class Attach:
    """Grain map in the training process, after `mp_prefetch`: a batch's SlotRefs -> the arrays
    in those slots (copies of the small ones, `Slots.pack`). Each slot is mapped once, its name
    unlinked then; the slot is released (back to its worker) when the batch array handed out
    from it and every view of it are gone."""

    def __init__(self):
        self._mapped: dict[str, mmap.mmap] = {}

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, _state: dict) -> None:
        self.__init__()

    def __call__(self, batch: dict) -> dict:
        return {k: self.array(v) if isinstance(v, SlotRef) else v for k, v in batch.items()}

    def array(self, ref: SlotRef) -> np.ndarray:
        memory = self._mapped.get(ref.name)
        if memory is None:
            path = os.path.join(SHM_DIR, ref.name)
            fd = os.open(path, os.O_RDWR)
            try:
                memory = mmap.mmap(fd, 0)
            finally:
                os.close(fd)
            _unlink(path)  # mapped by both processes now: nothing to leave in /dev/shm
            self._mapped[ref.name] = memory
        if memory[0] != TAKEN:
            raise RuntimeError(f"batch slot {ref.name} handed over while free")
        array = np.ndarray(ref.shape, np.dtype(ref.dtype), buffer=memory, offset=ref.offset)
        return array.copy() if ref.copied else handed_out(array, memory)


def _release(memory: mmap.mmap) -> None:
    memory[0] = FREE


def _unlink(path: str) -> None:
    """Unlinks a worker's slot, if still there, and takes it off the resource tracker's list."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    resource_tracker.unregister(_posix_name(path), "shared_memory")


def _posix_name(path: str) -> str:
    """The POSIX shared-memory name of a file in SHM_DIR (what the resource tracker unlinks)."""
    return "/" + os.path.basename(path)
