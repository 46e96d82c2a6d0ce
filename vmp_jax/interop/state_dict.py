"""Our model's parameters as a VideoMamba state dict and back, and state-dict files on disk.

    tensors = to_state_dict(params, cfg)    # {torch name: np.ndarray}, PyTorch layouts
    write(tensors, "vmp.safetensors", cfg)  # + vmp.json, the config to rebuild it
    params = from_state_dict(tensors, cfg)  # {path: np.ndarray}, strict

Files: `.safetensors` (read and written without torch) or `.pth`/`.pt` (torch.save /
torch.load with weights_only, so a file cannot run code). Every check names the first tensor
that does not fit: its name, the expected shape and the shape found.
"""

import dataclasses
import json
import os

import numpy as np

from vmp_jax import storage
from vmp_jax.interop import names
from vmp_jax.models.config import ModelConfig

TORCH_SUFFIXES = (".pth", ".pt")
SUFFIXES = (".safetensors", *TORCH_SUFFIXES)
INSTALL_TORCH = "PyTorch is needed for this: pip install torch==2.13.0 safetensors"


class StateDictError(ValueError):
    """A state dict that does not fit the model; the message names the first bad tensor."""


def require_torch():
    """The torch module, or an ImportError that says how to install it."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(INSTALL_TORCH) from e
    return torch


def _safetensors_numpy():
    try:
        import safetensors.numpy
    except ImportError as e:
        raise ImportError(INSTALL_TORCH) from e
    return safetensors.numpy


def to_state_dict(params: dict[tuple, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """{VideoMamba name: float32 array in PyTorch layout} of a model's weights
    ({path: array}, as `vmp_jax.engine.state.flat_params` gives)."""
    return {
        e.torch_name: np.ascontiguousarray(e.layout.to_torch(np.asarray(params[e.jax_path])))
        for e in names.table(cfg)
    }


def check_shapes(tensors: dict[str, np.ndarray], cfg: ModelConfig, source: str) -> None:
    """StateDictError naming the first missing, mis-shaped or unexpected tensor."""
    expected = names.torch_shapes(cfg)
    for name, shape in expected.items():
        if name not in tensors:
            raise StateDictError(f"{source}: missing tensor {name} (expected shape {shape})")
        if tuple(tensors[name].shape) != shape:
            raise StateDictError(
                f"{source}: tensor {name} has shape {tuple(tensors[name].shape)}, expected "
                f"{shape} for this config"
            )
    extra = [name for name in tensors if name not in expected]
    if extra:
        raise StateDictError(
            f"{source}: unexpected tensor {extra[0]} {tuple(tensors[extra[0]].shape)} "
            f"({len(extra)} in all) not in this config's model"
        )


def from_state_dict(
    tensors: dict[str, np.ndarray], cfg: ModelConfig, source: str = "state dict"
) -> dict[tuple, np.ndarray]:
    """The model's weights {path: float32 array} from a state dict with exactly the tensors
    of `names.table(cfg)`; StateDictError naming the first that does not fit otherwise."""
    check_shapes(tensors, cfg, source)
    return {
        e.jax_path: e.layout.from_torch(np.asarray(tensors[e.torch_name], np.float32))
        for e in names.table(cfg)
    }


def config_path(path: str) -> str:
    """The JSON written beside an exported file: `x.safetensors` -> `x.json`."""
    return os.path.splitext(path)[0] + ".json"


def write(tensors: dict[str, np.ndarray], path: str, cfg: ModelConfig) -> list[str]:
    """Writes the tensors (format from the suffix) and the model config beside them as JSON;
    returns both paths."""
    _check_suffix(path)
    with storage.staged_file(path) as local:
        if path.endswith(".safetensors"):
            _safetensors_numpy().save_file(tensors, local)
        else:
            torch = require_torch()
            torch.save({k: torch.tensor(v) for k, v in tensors.items()}, local)
    storage.write_text(config_path(path), json.dumps(dataclasses.asdict(cfg), indent=1))
    return [path, config_path(path)]


def read(path: str) -> dict[str, np.ndarray]:
    """{name: float32 array} of a state-dict file; a checkpoint whose state dict is nested
    under `model`, `module` or `state_dict` is unwrapped."""
    _check_suffix(path)
    if not storage.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    with storage.local_file(path, suffix=os.path.splitext(path)[1]) as local:
        return _read_local(local, path)


def _read_local(local: str, path: str) -> dict[str, np.ndarray]:
    """`read` of a local copy of `path` (errors name `path`)."""
    if path.endswith(".safetensors"):
        load_file = _safetensors_numpy().load_file
        from safetensors import SafetensorError

        try:
            loaded = load_file(local)
        except SafetensorError as e:
            raise StateDictError(f"{path}: not a readable safetensors file ({e})") from e
        return {k: v.astype(np.float32) for k, v in loaded.items()}
    return _read_torch(local, path, require_torch())


def _read_torch(local: str, path: str, torch) -> dict[str, np.ndarray]:
    try:
        obj = torch.load(local, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        reason = f"{type(e).__name__}: {e}"
        raise StateDictError(f"{path}: not a readable PyTorch file ({reason})") from e
    for key in ("model", "module", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise StateDictError(f"{path}: not a state dict (a {type(obj).__name__})")
    tensors = {}
    for name, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise StateDictError(f"{path}: not a state dict ({name!r} is a {type(value).__name__})")
        tensors[name] = value.detach().to(torch.float32).numpy()
    return tensors


def _check_suffix(path: str) -> None:
    if not path.endswith(SUFFIXES):
        raise ValueError(f"{path}: weights files must end in {', '.join(SUFFIXES)}")
