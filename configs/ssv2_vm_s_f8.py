"""VideoMamba-Small on Something-Something V2, 8 frames, 224 px.

vmp train --config configs/ssv2_vm_s_f8.py --workdir runs/ssv2_vm_s_f8
"""

from configs import common


def get_config():
    return common.experiment("ssv2", "vm", "s", frames=8)
