"""Where a training batch is written, and how a Grain worker hands it over without a copy.

`pipeline.LoadBatch` writes each clip straight into its slot of one batch array (a frame store's
JPEG frames decoded into it). In the training process (`data.num_workers=0`) that array is a
new one per batch (`InProcess`). In a Grain worker it is a slot of shared memory that the worker
keeps and reuses (`WorkerSlots`): the batch carries a `SlotRef` in its place, and the training
process maps each slot once and hands out the array in it (`Attach`, a map after
`mp_prefetch`). Grain's own hand-off copies every batch into a new shared-memory object, whose
pages the kernel allocates and zeroes one by one on first touch: 17 ms of the worker's CPU for
a 26 MB batch (8 clips on a 320 x 428 canvas) on the CI-sized VM, more than a third of the JPEG
decoding it carries (benchmarks/RESULTS.md).

Ownership: a batch's arrays are the consumer's, as any NumPy array is. A slot goes back to its
worker only when the last reference to the array handed out is gone: the batch, any view of it
(a slice or reshape keeps its base), a jax array that aliases it on the CPU, a host-to-device
copy in flight (jax holds the array until the copy is done). A batch kept is never overwritten:
a worker that finds no free slot makes another, up to MAX_SLOTS, and past that hands the batch
over through Grain's copy. A slot lost with its batch (Grain drops the batches in flight when an
iterator is restored or closed) is never reused.

Names: a slot is a file in /dev/shm, unlinked as soon as the training process has mapped it,
or by its worker when the worker exits if that never happened; where /dev/shm is missing,
workers use Grain's hand-off.
"""

import atexit
import contextlib
import dataclasses
import logging
import math
import mmap
import os
import secrets
import threading
import weakref

import numpy as np

log = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"
HEADER = mmap.PAGESIZE  # the slot's state in its first byte; the array page-aligned after it
FREE, TAKEN = 0, 1
MAX_SLOTS = 16  # per worker; a worker with 2 reader threads has up to about 7 batches in flight


class InProcess:
    """Batch arrays in the training process: a new one each batch, the consumer's to keep."""

    def take(self, shape: tuple[int, ...], dtype) -> tuple[np.ndarray, np.ndarray]:
        """(the array to write the batch into, what the batch holds in its place: itself)."""
        array = np.empty(shape, dtype)
        return array, array


@dataclasses.dataclass(frozen=True)
class SlotRef:
    """A batch array in a worker's slot, as it travels to the training process."""

    name: str  # the slot's file in SHM_DIR
    shape: tuple[int, ...]
    dtype: str


class _Slot:
    """One shared-memory file of a worker: HEADER bytes (the state) and then the array."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.name = f"vmp-batch-{os.getpid()}-{secrets.token_hex(6)}"
        self.path = os.path.join(SHM_DIR, self.name)
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, HEADER + nbytes)
            self.memory = mmap.mmap(fd, HEADER + nbytes)
        finally:
            os.close(fd)
        atexit.register(_unlink, self.path)  # if the training process never mapped it

    @property
    def free(self) -> bool:
        return self.memory[0] == FREE


class WorkerSlots:
    """A Grain worker's batch arrays: its slots, made on first use in each process (none are
    pickled with the dataset), reused once the training process has released them."""

    def __init__(self, max_slots: int = MAX_SLOTS):
        self.max_slots = max_slots
        self._slots: list[_Slot] = []
        self._lock = threading.Lock()  # the worker's reader threads take slots concurrently
        self._usable = os.path.isdir(SHM_DIR)

    def __getstate__(self) -> dict:
        return {"max_slots": self.max_slots}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_slots"])

    def take(self, shape: tuple[int, ...], dtype) -> tuple[np.ndarray, SlotRef | np.ndarray]:
        """(the array to write the batch into, what the batch holds in its place: a SlotRef,
        or the array itself when no slot is free (Grain copies it to the training process))."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        slot = self._free_slot(nbytes)
        if slot is None:
            array = np.empty(shape, dtype)
            return array, array
        array = np.ndarray(shape, dtype, buffer=slot.memory, offset=HEADER)
        return array, SlotRef(slot.name, tuple(shape), dtype.str)

    def _free_slot(self, nbytes: int) -> _Slot | None:
        with self._lock:
            slot = next((s for s in self._slots if s.nbytes == nbytes and s.free), None)
            if slot is None and self._usable and len(self._slots) < self.max_slots:
                try:
                    slot = _Slot(nbytes)
                except OSError as e:  # /dev/shm full or read-only: Grain's hand-off
                    log.warning("batches handed over by copy: no slot in %s (%s)", SHM_DIR, e)
                    self._usable = False
                    return None
                self._slots.append(slot)
            if slot is not None:
                slot.memory[0] = TAKEN
            return slot


class Attach:
    """Grain map in the training process, after `mp_prefetch`: a batch's SlotRefs -> the arrays
    in those slots. Each slot is mapped once, its name unlinked then; the array's slot is
    released (back to its worker) when the array and every view of it are gone."""

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
        # Its base is the mmap, so that views of it keep this array (and the slot) alive.
        array = np.ndarray(ref.shape, np.dtype(ref.dtype), buffer=memory, offset=HEADER)
        weakref.finalize(array, _release, memory)
        return array


def _release(memory: mmap.mmap) -> None:
    memory[0] = FREE


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
