"""VideoMamba-Small on ImageNet-1K pre-training, 224 px.

vmp train --config configs/in1k_vm_s.py --workdir runs/in1k_vm_s
"""

from configs import common


def get_config():
    return common.experiment("in1k", "vm", "s")
