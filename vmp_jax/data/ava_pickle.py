"""Pickles read without running anything in them (MMAction2's AVA proposals,
`vmp_jax.data.ava.read_proposals_pickle`).

MMAction2's `ava_dense_proposals_{train,val}.FAIR.recall_93.9.pkl` is a dict
`"video_id,0902" -> array [[x1, y1, x2, y2, score], ...]` (normalised boxes). A plain
`pickle.load` would call any function the file names; `SafeUnpickler` admits only what such
a file needs: containers and scalars (pickle opcodes, no globals), and the few globals that
rebuild NumPy arrays (`_reconstruct`, protocol 5's `_frombuffer`), dtypes and scalars (under
NumPy 1's `numpy.core` and NumPy 2's `numpy._core` names), `_codecs.encode` (protocol 2's
bytes), `set`/`frozenset` and `collections.OrderedDict`. Any other global is refused with an
`UnsafePickleError` naming it, before it is looked up, so nothing in the file runs.
"""

import io
import pickle

ALLOWED_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5's arrays
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("__builtin__", "set"),
        ("__builtin__", "frozenset"),
        ("collections", "OrderedDict"),
    }
)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that names a global outside `ALLOWED_GLOBALS`."""


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only `ALLOWED_GLOBALS`."""

    def __init__(self, file, path: str = "<pickle>"):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"{self.path}: refuses the global {module}.{name}: a proposals pickle holds "
                f"only containers, numbers, strings and NumPy arrays"
            )
        return super().find_class(module, name)


class BadPickleError(pickle.UnpicklingError, ValueError):
    """Bytes that are not a whole pickle (truncated, another format)."""


def safe_load(data: bytes, path: str = "<pickle>"):
    """The object in `data`, through `SafeUnpickler`. UnsafePickleError for a refused global;
    BadPickleError naming `path` for bytes that are not a readable pickle (the unpickler's own
    errors, EOFError or a bad opcode, name no file)."""
    try:
        return SafeUnpickler(io.BytesIO(data), path).load()
    except UnsafePickleError:
        raise
    except Exception as error:  # pickle raises many kinds for bad bytes
        raise BadPickleError(
            f"{path}: not a readable pickle ({type(error).__name__}: {error}); expected "
            f"MMAction2's dense-proposals pickle, a dict 'video_id,timestamp' -> boxes"
        ) from error
