"""`VideoMambaDetector`: the spatio-temporal action detector of SPEC section 8 on the backbone.

    tokens = VideoMamba.tokens(video)[:, 1:]        (b, T*P, C) after norm_f, CLS dropped
    fmap   = tokens as (b, T, h, w, C), mean over T (b, h, w, C)     h, w = H/p, W/p
    rois   = roi_align(fmap, boxes, 7, 1/p)         (b, K, 7, 7, C)  boxes in input pixels
    logits = head(dropout(max over the 7 x 7 bins)) (b, K, num_classes)

The head of VideoMAE's AVA detector and SlowFast's ROI head (ROIAlign 7 x 7, aligned=False,
adaptive sampling, a max over the bins, dropout, a linear layer; sigmoid outside). The
detector is a VideoMamba whose `head` reads pooled box features instead of the CLS token: its
modules and so its parameter paths are VideoMamba's exactly (embed, layers, norm_f, head), so a
classification checkpoint initialises it (`train.init_from`) with only the head left out
(`backbone_paths`), and exports, the checkpoint layouts and the sharding rules apply
unchanged.
"""

import jax.numpy as jnp

from vmp_jax.models.config import ModelConfig
from vmp_jax.models.roi_align import roi_align
from vmp_jax.models.videomamba import VideoMamba

ROI_OUTPUT = 7  # bins per side (VideoMAE's and SlowFast's AVA heads)
ROI_SAMPLING = -1  # adaptive: ceil(box side / 7) samples per bin and side (torchvision's 0)
ROI_ALIGNED = False  # VideoMAE's AVA head: no half-pixel shift
HEAD = "head"  # the task-specific layer; everything else is the backbone


class VideoMambaDetector(VideoMamba):
    """(video (b, T, H, W, 3), boxes (b, K, 4) x1, y1, x2, y2 in input pixels) -> action
    logits (b, K, num_classes) float32, one row per box (padding boxes give rows to mask)."""

    def __call__(self, video, boxes):
        p = self.cfg.patch_size
        b, t, h, w = video.shape[0], video.shape[1], video.shape[2] // p, video.shape[3] // p
        tokens = self.tokens(video)[:, 1:]  # (b, T*h*w, C) float32, time-major
        fmap = tokens.reshape(b, t, h, w, -1).mean(1)  # (b, h, w, C)
        rois = roi_align(
            fmap, boxes.astype(jnp.float32), ROI_OUTPUT, 1.0 / p, ROI_SAMPLING, ROI_ALIGNED
        )  # (b, K, 7, 7, C)
        pooled = rois.max(axis=(2, 3))  # (b, K, C)
        return self.head(self.head_drop(pooled)).astype(jnp.float32)


def model_class(cfg: ModelConfig) -> type[VideoMamba]:
    """The module `cfg.task` builds: VideoMamba ("classify") or VideoMambaDetector ("ava")."""
    return VideoMambaDetector if cfg.task == "ava" else VideoMamba


def backbone_paths(paths) -> list[tuple]:
    """The parameter paths of `paths` outside the task's head (what `train.init_from` takes
    from a checkpoint of another task)."""
    return [path for path in paths if path[0] != HEAD]
