"""VideoMamba-Tiny on Kinetics-400, 16 frames, 224 px.

vmp train --config configs/k400_vm_ti_f16.py --workdir runs/k400_vm_ti_f16
"""

from configs import common


def get_config():
    return common.experiment("k400", "vm", "ti", frames=16)
