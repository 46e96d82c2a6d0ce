"""VideoMambaPro-Middle on HMDB51, 8 frames, 224 px.

vmp train --config configs/hmdb51_vmp_m_f8.py --workdir runs/hmdb51_vmp_m_f8
"""

from configs import common


def get_config():
    return common.experiment("hmdb51", "vmp", "m", frames=8)
