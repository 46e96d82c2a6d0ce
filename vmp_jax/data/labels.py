"""Class names: a label map file, the run's own classes.txt, the generated dataset's classes.txt,
or none (indices).

`vmp train` writes the names it trained with into its workdir (WORKDIR/classes.txt, beside
config.json), so that a checkpoint copied to another machine or a bucket names its classes
whatever the current folder holds.

Label map formats (by content, whatever the extension):
  one name per line, line i naming class i      (classes.txt, Kinetics' label lists)
  CSV with a header naming `id` and `name`      (Kinetics' kinetics_400_labels.csv)
  JSON: a list of names, {name: index} or {index: name}   (SlowFast's kinetics_classnames.json)
"""

import csv
import json

from vmp_jax import storage

DATASET_FILE = "classes.txt"  # what `vmp make-synthetic` writes into its data_root


def read_label_map(path: str) -> list[str]:
    """The class names of a label map file, index order."""
    if not storage.isfile(path):
        raise FileNotFoundError(f"label map not found: {path}")
    text = storage.read_text(path)
    if text.lstrip().startswith(("{", "[")):
        return _from_json(path, json.loads(text))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    header = [h.strip().lower() for h in lines[0].split(",")] if lines else []
    if "name" in header and "id" in header:
        return _from_pairs(
            path, ((r[header.index("id")], r[header.index("name")]) for r in csv.reader(lines[1:]))
        )
    if not lines:
        raise ValueError(f"{path}: the label map names no classes")
    return lines


def _from_json(path: str, data) -> list[str]:
    if isinstance(data, list):
        return [str(name) for name in data]
    if isinstance(data, dict) and all(isinstance(v, int) for v in data.values()):
        return _from_pairs(path, ((index, name) for name, index in data.items()))
    if isinstance(data, dict):
        return _from_pairs(path, data.items())
    raise ValueError(f"{path}: expected a JSON list of names or a name <-> index object")


def _from_pairs(path: str, pairs) -> list[str]:
    """Names from (index, name) pairs; the indices must be exactly 0..K-1."""
    try:
        by_index = {int(i): str(name).strip().strip('"') for i, name in pairs}
    except ValueError as e:
        raise ValueError(f"{path}: a class index is not an integer ({e})") from e
    if sorted(by_index) != list(range(len(by_index))):
        raise ValueError(f"{path}: class indices must run 0..{len(by_index) - 1} without gaps")
    return [by_index[i] for i in range(len(by_index))]


def class_names(
    config, label_map: str | None = None, *, workdir: str | None = None
) -> list[str] | None:
    """The names of the config's classes: from `label_map` (an explicit choice), else the run's
    own WORKDIR/classes.txt (written by `vmp train`), else `data.label_map`, else the data
    root's classes.txt; None when there is none. A map that names another number of classes
    than model.num_classes is an error when asked for, and ignored when found."""
    k = config.model.num_classes
    if not label_map and workdir:
        names = _found(storage.join(workdir, DATASET_FILE), k)
        if names is not None:
            return names  # the names the checkpoint was trained with
    explicit = label_map or config.data.get("label_map", "")
    if explicit:
        names = read_label_map(explicit)
        if len(names) != k:
            raise ValueError(
                f"{explicit} names {len(names)} classes; the model has {k} (model.num_classes)"
            )
        return names
    return _found(storage.join(config.data.data_root or ".", DATASET_FILE), k)


def _found(path: str, k: int) -> list[str] | None:
    """The names in `path` if it exists and names `k` classes, else None."""
    if not storage.isfile(path):
        return None
    names = read_label_map(path)
    return names if len(names) == k else None


def save_class_names(config, workdir: str) -> str | None:
    """Writes the config's class names (if it has any) as WORKDIR/classes.txt, one a line in
    class order; returns the path, or None when the classes have no names."""
    names = class_names(config)
    if names is None:
        return None
    path = storage.join(workdir, DATASET_FILE)
    storage.write_text(path, "".join(f"{name}\n" for name in names))
    return path
