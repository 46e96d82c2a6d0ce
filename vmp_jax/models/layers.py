"""The two layouts of the blocks' weights, and the conversion between them.

per block (`scan_layers=False`): ("layers", i, "mixer", ...), one array per block; the
  canonical layout of every {path: array} dict outside the model (checkpoint reading, export,
  import, `vmp_jax.engine.state.flat_params`), and VideoMamba's own naming.
stacked (`scan_layers=True`): ("layers", "mixer", ...), one array per weight with the blocks
  on a leading axis of size depth (logical axis "layers"), as `nnx.vmap` builds them for
  `nnx.scan`.
"""

import numpy as np

LAYERS = "layers"


def stacked_at(path: tuple) -> int | None:
    """The index of "layers" in a path of the stacked layout (the next element is a name, not
    a block index), else None."""
    for i, name in enumerate(path[:-1]):
        if name == LAYERS and not isinstance(path[i + 1], int) and not str(path[i + 1]).isdigit():
            return i
    return None


def per_block_at(path: tuple) -> int | None:
    """The index of "layers" in a path of the per-block layout (the next element is a block
    index, an int or its string as a saved tree names it), else None."""
    for i, name in enumerate(path[:-1]):
        if name == LAYERS and (isinstance(path[i + 1], int) or str(path[i + 1]).isdigit()):
            return i
    return None


def unstack(flat: dict, depth: int) -> dict:
    """{path: array} with stacked block weights split into per-block paths; others as given."""
    out = {}
    for path, value in flat.items():
        at = stacked_at(path)
        if at is None:
            out[path] = value
            continue
        if value.shape[0] != depth:
            name = ".".join(map(str, path))
            raise ValueError(f"{name}: {value.shape[0]} stacked blocks, expected {depth}")
        for i in range(depth):
            out[(*path[: at + 1], i, *path[at + 1 :])] = value[i]
    return out


def stack(flat: dict, depth: int, xp=np) -> dict:
    """{path: array} with per-block paths ("layers", i, ...) joined into stacked ones; KeyError
    naming the first block weight missing. `xp`: numpy, or jax.numpy inside a trace."""
    out, groups = {}, {}
    for path, value in flat.items():
        at = per_block_at(path)
        if at is None:
            out[path] = value
        else:
            groups.setdefault((*path[: at + 1], *path[at + 2 :]), {})[int(path[at + 1])] = value
    for path, blocks in groups.items():
        missing = [i for i in range(depth) if i not in blocks]
        if missing:
            name = ".".join(map(str, path)).replace(f"{LAYERS}.", f"{LAYERS}.{missing[0]}.", 1)
            raise KeyError(f"no weight {name} (block {missing[0]} of {depth})")
        out[path] = xp.stack([blocks[i] for i in range(depth)])
    return out
