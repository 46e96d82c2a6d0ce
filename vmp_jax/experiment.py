"""Loading experiment configs: a `configs/*.py` file's `get_config()`, locked, with
`--config.key=value` overrides, validated before any work.

A key that does not exist, or a value of the wrong type, raises ValueError naming the key.

A value that two sections need is set once: the data section's frame count and crop size are
None in the configs and take the model's (`LINKED`), the eval short side takes the crop size
(`DERIVED`). Setting a linked key to another value than its source (training 16-frame clips
on an 8-frame model) is an error naming both keys, unless `data.allow_resize` asks for it (the
position embeddings are then interpolated on the fly, as for fine-tuning at another length).

`vmp train` and `vmp import` save the config they ran with as WORKDIR/config.json, so that a
checkpoint can be used (`vmp predict`) without the file and overrides that made it.
"""

import ast
import importlib.util
import json
import sys
from pathlib import Path

import ml_collections

from vmp_jax import storage
from vmp_jax.models.config import ModelConfig

REPO_ROOT = Path(__file__).resolve().parent.parent


def _load_module(path: Path):
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    if str(REPO_ROOT) not in sys.path:  # experiment files import `configs.common`
        sys.path.insert(0, str(REPO_ROOT))
    spec = importlib.util.spec_from_file_location(f"_vmp_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {str(path)!r} has no get_config()")
    return module


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string


def apply_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Set config[key] (dotted) from its command-line text, keeping the field's type."""
    *parents, leaf = key.split(".")
    node = config
    for i, part in enumerate(parents):
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            raise ValueError(f"config key {'.'.join(parents[: i + 1])!r} does not exist")
        node = node[part]
    if leaf not in node:
        valid = ", ".join(sorted(node.keys()))
        raise ValueError(f"config key {key!r} does not exist; valid here: {valid}")
    value = _parse_value(text)
    old = node[leaf]
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if old is not None and not isinstance(value, type(old)):
        raise ValueError(
            f"config key {key!r}: {text!r} is a {type(value).__name__}; expected a "
            f"{type(old).__name__} like {old!r}"
        )
    node[leaf] = value


def load_config(path: str | Path, overrides: list[str] = ()) -> ml_collections.ConfigDict:
    """get_config() from `path`, with overrides "key=value" (or "--config.key=value")
    applied, locked, and its model section validated."""
    return _finish(_load_module(Path(path)).get_config(), overrides)


SAVED_CONFIG = "config.json"


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes `config` as WORKDIR/config.json (local or in a bucket); returns the path."""
    path = storage.join(workdir, SAVED_CONFIG)
    storage.write_text(path, json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def _tuples(value):
    """JSON lists back to the tuples the configs use."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def load_saved_config(workdir: str, overrides: list[str] = ()) -> ml_collections.ConfigDict:
    """The config a workdir was trained (or imported) with, with overrides applied."""
    path = storage.join(workdir, SAVED_CONFIG)
    if not storage.isfile(path):
        raise FileNotFoundError(
            f"{workdir} has no {SAVED_CONFIG} (vmp train and vmp import write one); "
            "give the experiment file with --config"
        )
    saved = json.loads(storage.read_text(path))
    return _finish(ml_collections.ConfigDict(_tuples(saved)), overrides)


# (key, source): None at key takes the source's value; another value needs data.allow_resize.
LINKED = (("data.num_frames", "model.num_frames"), ("data.img_size", "model.img_size"))
# (key, source): None at key takes the source's value; any other value is a choice of its own.
DERIVED = (("data.short_side", "data.img_size"),)


def _get(config, key: str):
    section, leaf = key.split(".")
    return config[section][leaf]


def resolve_links(config: ml_collections.ConfigDict) -> None:
    """Fills the linked and derived keys left None from their sources; ValueError naming both
    keys where a linked one was set to something else without data.allow_resize."""
    if "data" not in config or "model" not in config:
        return
    allow_resize = config.data.get("allow_resize", False)
    for key, source in LINKED + DERIVED:
        section, leaf = key.split(".")
        value, wanted = _get(config, key), _get(config, source)
        if value is None:
            config[section][leaf] = wanted
        elif (key, source) in LINKED and value != wanted and not allow_resize:
            raise ValueError(
                f"config key {key} is {value} but {source} is {wanted}: set one of them only "
                f"(the other follows), or give --config.data.allow_resize=True to feed the "
                f"model inputs of another size (its position embeddings are interpolated)"
            )


def _finish(config: ml_collections.ConfigDict, overrides) -> ml_collections.ConfigDict:
    """Locks `config`, applies the overrides, fills the linked keys and validates it."""
    config.lock()
    for item in overrides:
        item = item.removeprefix("--config.")
        if "=" not in item:
            raise ValueError(f"config override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        apply_override(config, key, text)
    resolve_links(config)
    model_config(config)  # a bad model or data value fails now, before any work
    if "data" in config:
        from vmp_jax.data.pipeline import ClipSettings

        ClipSettings.from_config(config)
    return config


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
    """The ModelConfig of a loaded config (ValueError naming a bad field)."""
    fields = config.model.to_dict()
    unknown = set(fields) - set(ModelConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"config key(s) model.{', model.'.join(sorted(unknown))} do not exist")
    return ModelConfig(**fields)
