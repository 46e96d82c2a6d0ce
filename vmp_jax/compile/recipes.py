"""The K400 recipes `vmp compile table` compiles by default: every size (Ti, S, M), frame
count (8, 16) and kind (VideoMamba, VMP) of configs/k400_*.py, as paths from the repository
root. Apart from `table.py`, which compiles them, so that `vmp compile --help` gives the
default without importing jax."""

SIZES, FRAMES, KINDS = ("ti", "s", "m"), (8, 16), ("vm", "vmp")
K400_CONFIGS = [
    f"configs/k400_{kind}_{size}_f{frames}.py"
    for size in SIZES
    for frames in FRAMES
    for kind in KINDS
]
