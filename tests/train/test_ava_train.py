"""`vmp train` and `vmp eval` of the AVA detector end to end on a tiny generated AVA dataset
(issue 41's acceptance, at test size): the frame-mAP of the trained head on the validation
keyframes, far above the same head with the boxes shuffled between actors; AVA's files
written by `vmp eval`, with the detected or the ground-truth boxes; and `train.init_from` of
a classification checkpoint taking the backbone alone."""

import contextlib
import io
import json
import os

import jax
import numpy as np
import pytest

from tests.ava_sets import config_overrides, generated_ava
from vmp_jax import cli
from vmp_jax.data import ava, ava_inputs, synthetic_ava
from vmp_jax.engine import checkpoint
from vmp_jax.engine.state import Trainer, flat_params
from vmp_jax.experiment import REPO_ROOT, load_config
from vmp_jax.train import loop

CONFIG = str(REPO_ROOT / "configs" / "ava_demo.py")
# ava_demo's frames (120 x 160 at 96 x 128, 8 px patches) with 2 frames and 2 blocks of 64.
TINY = [
    "model.num_frames=2", "model.embed_dim=64", "model.depth=2",
    "ava.max_boxes=4", "data.batch_size=4", "eval.batch_size=8",
    "optim.lr_batch_base=4", "optim.base_lr=1e-2", "optim.epochs=15", "train.eval_every=15",
]  # fmt: skip


# The frame-mAP reached, and how far the shuffled control falls below it (measured at this
# size: 0.686 and 0.463 on 10 validation keyframes; ava_demo's figures are in docs/detection.md).
MAP, MARGIN = 0.6, 0.15


def _overrides(root: str) -> list[str]:
    return config_overrides(TINY, root)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    return generated_ava(tmp_path_factory, videos=12, seconds=6, val_fraction=0.34, seed=1)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """(workdir, vmp train's final metrics) of the tiny detector, on one device."""
    workdir = str(tmp_path_factory.mktemp("run"))
    config = load_config(CONFIG, _overrides(dataset))
    final = loop.train(config, workdir, devices=jax.devices()[:1], echo=lambda *_: None)
    return workdir, final


def _eval(dataset, workdir, out, *extra) -> tuple[dict, str]:
    argv = ["eval", "--config", CONFIG, "--checkpoint", workdir, "--out", out]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main([*argv, *_overrides(dataset), *extra]) == 0
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f), printed.getvalue()


def test_the_detector_scores_its_boxes_far_above_the_shuffled_control(dataset, trained, tmp_path):
    """Validation in `vmp train` scores the last step; `vmp eval --shuffle-boxes` scores the
    same checkpoint with each keyframe's boxes rotated between its persons."""
    workdir, final = trained
    val = final["val"]
    out = tmp_path / "shuffled"
    shuffled, printed = _eval(dataset, workdir, str(out), "--shuffle-boxes")
    assert val["mAP"] >= MAP, (val, shuffled["mAP"])
    assert shuffled["mAP"] <= val["mAP"] - MARGIN, (val, shuffled["mAP"])
    assert f"frame-mAP@0.5 {shuffled['mAP']:.4f}" in printed and "shuffled" in printed
    names = ava.read_label_map(os.path.join(dataset, synthetic_ava.LABEL_MAP))
    assert set(shuffled["per_class"]) <= set(names.values())
    rows, problems = ava.read_rows(str(out / "detections.csv"))
    assert not problems and set(rows.actions.tolist()) == set(names)  # the evaluated actions
    assert len(set(zip(rows.video_ids, rows.timestamps, strict=True))) == val["keyframes"]
    assert os.path.isfile(out / "ap_per_class.csv")


def test_ground_truth_boxes_at_test(dataset):
    """--config.ava.test_boxes=gt evaluates on the annotated boxes (score 1), every
    non-excluded keyframe of the ground truth."""
    config = load_config(CONFIG, [*_overrides(dataset), "--config.ava.test_boxes=gt"])
    clips = ava_inputs.open_clips(config, "val")
    truth = ava.read_ground_truth(os.path.join(dataset, "ava_val_v2.2.csv"))
    assert {kf.key for kf in clips.keyframes} == set(truth)
    for kf in clips.keyframes:
        np.testing.assert_array_equal(kf.boxes, truth[kf.key].boxes)
        assert np.all(kf.scores == 1)


def test_init_from_a_classifier_takes_the_backbone_alone(tmp_path):
    detector_config = load_config(CONFIG, _overrides(str(tmp_path)))  # (no data is read)
    as_classifier = ["--config.model.task=classify", "--config.model.num_classes=7"]
    classifier_config = load_config(CONFIG, [*_overrides(str(tmp_path)), *as_classifier])
    devices = jax.devices()[:1]
    classifier = Trainer.from_config(classifier_config, devices=devices)
    saved = classifier.init()
    store = checkpoint.Checkpoints(str(tmp_path / "k400"))
    store.save(3, saved)
    store.close()
    trainer = Trainer.from_config(detector_config, devices=devices)
    fresh = trainer.init()
    head = np.asarray(trainer.parts(fresh).model.head.kernel[...])
    state = loop._init_from(trainer, fresh, str(tmp_path / "k400"), lambda *_: None)
    got, want = flat_params(trainer.model(state)), flat_params(classifier.model(saved))
    for path, value in want.items():
        if path[0] != "head":
            np.testing.assert_array_equal(np.asarray(got[path]), np.asarray(value), str(path))
    np.testing.assert_array_equal(np.asarray(got[("head", "kernel")]), head)  # (C, 80) kept


def test_a_test_size_the_patches_do_not_tile_is_refused_before_any_step(tmp_path):
    config = load_config(CONFIG, [*_overrides(str(tmp_path)), "--config.ava.test_size=(96, 130)"])
    with pytest.raises(ValueError, match=r"ava.test_size is \(96, 130\).*patch_size 8"):
        ava_inputs.clip_config(config)
    ava_inputs.clip_config(load_config(CONFIG, _overrides(str(tmp_path))))  # 96 x 128 tiles


def test_a_recipe_without_init_from_warns_and_the_demo_does_not():
    recipe = str(REPO_ROOT / "configs" / "ava_vmp_ti_f16.py")
    warning = loop.init_from_warning(load_config(recipe))
    assert warning and "train.init_from" in warning and "expects_init_from" in warning
    assert loop.init_from_warning(load_config(recipe, ["--config.train.init_from=runs/k"])) is None
    assert loop.init_from_warning(load_config(CONFIG)) is None  # from scratch on purpose
    k400 = str(REPO_ROOT / "configs" / "k400_vmp_ti_f16.py")
    assert loop.init_from_warning(load_config(k400)) is None  # not a detector
