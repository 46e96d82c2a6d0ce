"""Table 5 ablation: VideoMambaPro-M on Kinetics-400 without the masked backward diagonal.

vmp train --config configs/k400_vmp_m_f8_no_mask.py --workdir runs/k400_vmp_m_f8_no_mask
"""

from configs import common


def get_config():
    return common.experiment("k400", "vmp", "m", frames=8, bwd_mask_diagonal=False)
