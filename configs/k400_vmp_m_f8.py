"""VideoMambaPro-Middle on Kinetics-400, 8 frames, 224 px.

vmp train --config configs/k400_vmp_m_f8.py --workdir runs/k400_vmp_m_f8
"""

from configs import common


def get_config():
    return common.experiment("k400", "vmp", "m", frames=8)
