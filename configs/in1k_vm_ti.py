"""VideoMamba-Tiny on ImageNet-1K pre-training, 224 px.

vmp train --config configs/in1k_vm_ti.py --workdir runs/in1k_vm_ti
"""

from configs import common


def get_config():
    return common.experiment("in1k", "vm", "ti")
