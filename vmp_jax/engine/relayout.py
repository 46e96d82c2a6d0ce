"""A saved train state in the other block layout (`model.scan_layers`), converted to this one.

Everything the state holds for the blocks (weights, the EMA copy, the optimiser's moments, the
drop-path RNG streams) is stacked on a leading "layers" axis in one layout and kept per block
in the other (`vmp_jax.models.layers`). Converting is exact: per-block arrays are stacked, or
the stack is sliced. Only the RNG streams differ in kind: the per-block layout gives a stream
only to blocks with a drop-path rate above 0, the stacked one to every block when drop path is
on. The blocks of rate 0 never draw from theirs, so a fresh stream (key i for block i, count
0) fills them, and the others keep their keys and counts: a run resumed in the other layout
continues with the same weights, moments and drop-path draws.
"""

import jax
import numpy as np
from flax import nnx

from vmp_jax.models import layers


def flatten(tree: dict, prefix: tuple = ()) -> dict[tuple, np.ndarray]:
    """A restored nested {name: ... {"value": array}} as {path of str: array}."""
    if "value" in tree and not isinstance(tree["value"], dict):
        return {prefix: tree["value"]}
    out = {}
    for name, node in tree.items():
        out.update(flatten(node, (*prefix, str(name))))
    return out


def _per_block_path(path: tuple, at: int, block: int) -> tuple:
    return (*path[: at + 1], str(block), *path[at + 1 :])


def saved_value(saved: dict, names: tuple) -> np.ndarray | None:
    """The value at a per-block (or non-block) path, names as strings, in a flattened saved
    tree of either layout (sliced out of the stack for a stacked one); None if absent."""
    if names in saved:
        return saved[names]
    at = layers.per_block_at(names)
    stacked = None if at is None else saved.get((*names[: at + 1], *names[at + 2 :]))
    return None if stacked is None else stacked[int(names[at + 1])]


def _missing_stream(abstract, block: int) -> np.ndarray:
    """A rate-0 block's RNG stream entry: key `block`, count 0."""
    if jax.dtypes.issubdtype(abstract.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(jax.random.key(block)))
    return np.zeros(abstract.shape[1:], abstract.dtype)


def _value(saved: dict, path: tuple, abstract) -> np.ndarray:
    """The saved value for a target path of this layout."""
    names = tuple(str(p) for p in path)
    at = layers.stacked_at(path)
    if at is not None:  # stacked here, per block in the checkpoint
        depth = abstract.shape[0]
        blocks = [saved.get(_per_block_path(names, at, i)) for i in range(depth)]
        if all(b is None for b in blocks) or (
            any(b is None for b in blocks) and "rngs" not in names
        ):
            raise ValueError(f"the checkpoint has no {'.'.join(names)} for its blocks")
        filled = [_missing_stream(abstract, i) if b is None else b for i, b in enumerate(blocks)]
        return np.stack(filled)
    value = saved_value(saved, names)  # per block here: stacked or not in the checkpoint
    if value is None:
        raise ValueError(f"the checkpoint has no {'.'.join(names)}")
    return value


def convert(saved_tree: dict, abstract_placed: nnx.State) -> nnx.State:
    """The restored tree of the other layout (numpy, `saved_tree`) as this layout's state,
    placed on the shardings of `abstract_placed` (a state of ShapeDtypeStructs)."""
    saved = flatten(saved_tree)
    out = {}
    for path, leaf in nnx.to_flat_state(abstract_placed):
        variable = isinstance(leaf, nnx.Variable)
        abstract = leaf.get_value() if variable else leaf  # a ShapeDtypeStruct with sharding
        value = _value(saved, path, abstract)
        if jax.dtypes.issubdtype(abstract.dtype, jax.dtypes.prng_key):
            value = jax.random.wrap_key_data(value)
        placed = jax.device_put(value, abstract.sharding)
        out[path] = leaf.replace(placed) if variable else placed
    return nnx.from_flat_state(out)
