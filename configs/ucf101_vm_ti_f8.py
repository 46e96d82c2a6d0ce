"""VideoMamba-Tiny on UCF101, 8 frames, 224 px.

vmp train --config configs/ucf101_vm_ti_f8.py --workdir runs/ucf101_vm_ti_f8
"""

from configs import common


def get_config():
    return common.experiment("ucf101", "vm", "ti", frames=8)
