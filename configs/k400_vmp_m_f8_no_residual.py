"""Table 5 ablation: VideoMambaPro-M on Kinetics-400 without the residual SSM.

vmp train --config configs/k400_vmp_m_f8_no_residual.py --workdir runs/k400_vmp_m_f8_no_residual
"""

from configs import common


def get_config():
    return common.experiment("k400", "vmp", "m", frames=8, residual_ssm=False)
