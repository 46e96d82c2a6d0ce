"""The detection head (SPEC section 8) on the backbone: each box pooled from the final tokens'
time-averaged map by ROIAlign (the SPEC loop of test_roi_align), max over the bins, the
linear head; and the detector's parameters are the classifier's, path for path."""

import dataclasses

import numpy as np
from flax import nnx

from tests.models.test_roi_align import reference
from vmp_jax.models import ModelConfig, VideoMamba, VideoMambaDetector
from vmp_jax.models.detection import backbone_paths, model_class

CFG = ModelConfig(
    embed_dim=16, depth=2, d_state=4, dt_rank=2, patch_size=8, img_size=32, num_frames=2,
    num_classes=5, task="ava",
)  # fmt: skip


def test_each_box_is_pooled_from_the_time_averaged_token_map(seed):
    model = VideoMambaDetector(CFG, rngs=nnx.Rngs(seed))
    model.eval()
    rng = np.random.default_rng(seed)
    video = rng.normal(size=(2, 2, 32, 48, 3)).astype(np.float32)  # a 4 x 6 map, not square
    corner = rng.uniform(0, 24, (2, 3, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(4, 24, (2, 3, 2))], -1)
    boxes = boxes.astype(np.float32)  # (2, 3, 4) x1, y1, x2, y2 in input pixels
    logits = np.asarray(model(video, boxes))
    tokens = np.asarray(model.tokens(video))  # (2, 1 + 2 * 24, 16), CLS first, time-major
    fmap = tokens[:, 1:].reshape(2, 2, 4, 6, 16).mean(1)  # (2, 4, 6, 16)
    pooled = reference(fmap, boxes, 7, 1 / 8, 0, False).max(axis=(2, 3))  # (2, 3, 16)
    want = pooled @ np.asarray(model.head.kernel[...]) + np.asarray(model.head.bias[...])
    assert logits.shape == (2, 3, 5)
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)


def test_the_detector_has_the_classifiers_parameter_paths():
    classifier = VideoMamba(dataclasses.replace(CFG, task="classify"), rngs=nnx.Rngs(0))
    detector = VideoMambaDetector(CFG, rngs=nnx.Rngs(0))
    paths = lambda m: {p: v.shape for p, v in nnx.to_flat_state(nnx.state(m, nnx.Param))}  # noqa: E731
    assert paths(detector) == paths(classifier)
    assert model_class(CFG) is VideoMambaDetector
    assert model_class(dataclasses.replace(CFG, task="classify")) is VideoMamba
    backbone = backbone_paths(paths(detector))
    assert sorted(set(paths(detector)) - set(backbone)) == [("head", "bias"), ("head", "kernel")]
