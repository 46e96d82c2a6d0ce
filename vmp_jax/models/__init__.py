"""VideoMamba / VideoMambaPro in Flax NNX (SPEC section 5)."""

from vmp_jax.models.config import SIZES, ModelConfig, preset
from vmp_jax.models.detection import VideoMambaDetector
from vmp_jax.models.roi_align import roi_align
from vmp_jax.models.videomamba import VideoMamba, count_params

__all__ = [
    "SIZES",
    "ModelConfig",
    "VideoMamba",
    "VideoMambaDetector",
    "count_params",
    "preset",
    "roi_align",
]
