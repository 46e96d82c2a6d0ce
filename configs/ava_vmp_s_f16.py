"""VideoMambaPro-Small on AVA v2.2: action detection, 16 frames at stride 4, 224 px crops.

The backbone starts from a Kinetics-400 checkpoint of the same model and frame count (the
classification head is left out), fine-tuned with VideoMAE's AVA recipe (configs/common.py
AVA_RECIPE: AdamW, layer-wise lr decay, 30 epochs; docs/detection.md):

vmp train --config configs/ava_vmp_s_f16.py --workdir runs/ava_vmp_s_f16 \
    --config.data.data_root=AVA_ROOT --config.train.init_from=runs/k400_vmp_s_f16
vmp eval --config configs/ava_vmp_s_f16.py --checkpoint runs/ava_vmp_s_f16 \
    --config.data.data_root=AVA_ROOT [--config.ava.test_boxes=gt]
"""

from configs import common


def get_config():
    return common.ava_experiment("vmp", "s", frames=16)
