"""PyTorch interop (SPEC section 7): VideoMamba's state-dict names and layouts.

names        the explicit table: our parameter paths <-> VideoMamba's names, per-tensor layouts
state_dict   our weights <-> {name: array}; .safetensors / .pth files; strict shape checks
released     OpenGVLab's released checkpoints adapted to a config (resize, inflate, head, VMP)
convert      `vmp export` / `vmp import`
parity       `vmp parity`: the JAX model against its PyTorch twin on the same inputs
torch_model  the pure-PyTorch model (needs torch; nothing else here imports it at import time)
"""
