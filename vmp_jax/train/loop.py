"""`vmp train`: the training loop, resumable from the workdir.

Start-up (everything that can fail on a bad config or missing data fails here, before any
compile): the config was validated by `load_config`; the data sources are opened; the mesh is
built; the state is created in its shards; the config is saved as WORKDIR/config.json and the
class names (if the data has any) as WORKDIR/classes.txt. If
WORKDIR/checkpoints holds a checkpoint, the state and the data iterator are restored from the
latest one and training continues from its step.

Each step: a global batch (each host reads its shard), one jitted train step. A step that is
not finite changes nothing and is logged; `train.max_nonfinite` in a row stop the run
(`nonfinite`). Every `train.log_every` steps: loss, accuracy, lr, grad norm (means over the
finite steps), non-finite steps, clips/s, the share of time spent waiting for input
(`input_wait`, with a warning once when over 20%) and skipped videos to the progress bar,
metrics.jsonl and TensorBoard. At each epoch end (every `train.eval_every`
epochs): multi-view validation, and a checkpoint with its top-1; also every `train.save_every`
steps, and at the end. On SIGTERM or SIGINT: a checkpoint after the current step (the same step
on every process) and a clean exit (`preemption`). Last: curves.png.

An AVA config (model.task "ava") runs the same loop on the detector: keyframe clips with their
boxes (`ava_inputs`), the detection steps (`detection_steps`), the backbone alone taken from
`train.init_from` (the head is the new task's), and validation by frame-mAP on the val
keyframes (`evaluate.detection`), which ranks the kept "best" checkpoint instead of top-1.
"""

import dataclasses

import jax
import numpy as np
from tqdm import tqdm

from vmp_jax import storage
from vmp_jax.data import ava_inputs, labels, pipeline, resample, sources
from vmp_jax.data.device_augment import DeviceAugment
from vmp_jax.engine import checkpoint, detection_steps, optim, preemption, sharding, steps
from vmp_jax.engine.mixing import Mixing
from vmp_jax.engine.state import Trainer, flat_params
from vmp_jax.evaluate import detection, multiview
from vmp_jax.experiment import save_config
from vmp_jax.models.detection import backbone_paths
from vmp_jax.models.videomamba import abstract_params
from vmp_jax.multihost import collect, join
from vmp_jax.train import metrics_log, nonfinite
from vmp_jax.train.log_window import LogWindow


@dataclasses.dataclass
class Setup:
    """What a run needs besides the loop itself."""

    config: object
    trainer: Trainer
    train_source: object
    val_source: object | None
    steps_per_epoch: int
    total_steps: int
    ava: bool = False  # the AVA detector: sources are `AvaClips`, validation is frame-mAP
    scorer: object = None  # AVA: the validation ground truth (`detection.Scorer`), read once


def setup(config, *, devices=None) -> Setup:
    join.initialize()
    if ava_inputs.is_ava(config):
        return _setup_ava(config, devices)
    train_source = sources.open_source(config.data, "train")
    has_val = sources.has_validation(config.data)
    val_source = sources.open_source(config.data, "val") if has_val else None
    per_epoch = pipeline.steps_per_epoch(config, len(train_source))
    total = int(round(config.optim.epochs * per_epoch))
    trainer = Trainer.from_config(config, steps_per_epoch=per_epoch, devices=devices)
    sharding.per_device(config.data.batch_size, "data.batch_size", trainer.mesh.size)
    if val_source is not None:
        sharding.per_device(config.eval.batch_size, "eval.batch_size", trainer.mesh.size)
    return Setup(config, trainer, train_source, val_source, per_epoch, total)


def _setup_ava(config, devices) -> Setup:
    """The AVA run's Setup: the train and val keyframes whose videos can be read."""
    train_clips = ava_inputs.open_clips(config, "train")
    val_clips = ava_inputs.open_clips(config, "val")
    if join.is_primary():
        for split, clips in (("train", train_clips), ("val", val_clips)):
            print(f"AVA {split}: {clips.summary()}")
    per_epoch = ava_inputs.steps_per_epoch(config, train_clips)
    total = int(round(config.optim.epochs * per_epoch))
    trainer = Trainer.from_config(config, steps_per_epoch=per_epoch, devices=devices)
    sharding.per_device(config.data.batch_size, "data.batch_size", trainer.mesh.size)
    sharding.per_device(config.eval.batch_size, "eval.batch_size", trainer.mesh.size)
    scorer = detection.Scorer(config)  # a bad ground truth or label map fails here
    return Setup(config, trainer, train_clips, val_clips, per_epoch, total, True, scorer)


# What a train step reads of a host's batch (the AVA detector's, or the classifier's).
TRAIN_KEYS = ("video", "label", *resample.PLAN_KEYS)


def device_batch(batch: dict, mesh, keys=TRAIN_KEYS) -> dict:
    """This host's arrays -> global arrays sharded over the batch axes: video, label and, with
    data.augment_on=device, the crop plans (or the given `keys` of those in the batch)."""
    data = sharding.batch_sharding(mesh)
    keys = [k for k in keys if k in batch]
    return {k: jax.make_array_from_process_local_data(data, batch[k]) for k in keys}


def train(config, workdir: str, *, devices=None, echo=print) -> dict:
    """Trains to the end of the schedule (resuming if possible); returns the final metrics."""
    ava = ava_inputs.is_ava(config)
    read = ava_inputs.input_paths(config) if ava else sources.input_paths(config.data)
    inputs = [*read, config.train.init_from]
    storage.check_access(inputs, outputs=[workdir])  # a bad URL fails here, in seconds
    s = setup(config, devices=devices)
    storage.makedirs(workdir)
    first_host = join.is_primary()
    echo = echo if first_host else silent
    if first_host:
        save_config(config, workdir)  # what `vmp predict` rebuilds the model from
        if not ava:  # (AVA's action names are the label map's)
            labels.save_class_names(config, workdir)  # and names its classes with, anywhere
    log = metrics_log.MetricsLog(workdir, enabled=first_host)
    ckpt = checkpoint.Checkpoints(workdir, keep=config.train.keep, metric=metric_name(config))
    if ava:
        data = iter(ava_inputs.train_dataset(config, s.train_source))
    else:
        data = iter(pipeline.train_dataset(config, s.train_source))
    # Restored straight into its shards (no fresh state is built first); a damaged newest
    # checkpoint is moved aside with a warning and the one before it is taken.
    state, start = ckpt.restore_latest(s.trainer.abstract_placed(), data, warn=echo)
    if state is not None:
        echo(f"resumed from {ckpt.directory}/{start}")
    else:
        start = 0
        state = s.trainer.init()
        if config.train.init_from:
            state = _init_from(s.trainer, state, config.train.init_from, echo)
        elif warning := init_from_warning(config):
            echo(warning)
    schedule = optim.schedule(config, s.steps_per_epoch)
    ema = config.optim.ema_decay > 0
    if ava:
        train_step = detection_steps.make_train_step(
            s.trainer, accum_steps=config.optim.accum_steps, schedule=schedule
        )
        eval_step = detection_steps.make_eval_step(s.trainer, ema=ema)
    else:
        train_step = steps.make_train_step(
            s.trainer,
            accum_steps=config.optim.accum_steps,
            schedule=schedule,
            mixing=Mixing.from_config(config),
            augment=DeviceAugment.for_config(config),
        )
        eval_step = steps.make_eval_step(s.trainer, ema=ema)
    echo(
        f"{s.total_steps} steps ({s.steps_per_epoch} per epoch x {config.optim.epochs} epochs), "
        f"global batch {config.data.batch_size}, mesh {dict(s.trainer.mesh.shape)}"
    )
    final = {}
    try:
        with preemption.Preemption() as preempt:
            state, final = _loop(
                s, state, data, train_step, eval_step, ckpt, log, start, first_host, preempt
            )
            ckpt.wait()  # the loop saved the last step
    finally:
        data.close()
        ckpt.close()
        log.close()
    if "stopped" in final:
        raise preemption.Preempted(final["stopped"])
    if first_host:
        final["curves"] = metrics_log.plot_curves(
            log.records(), storage.join(workdir, "curves.png")
        )
    return final


def silent(*_) -> None:
    """The echo of processes other than 0: the run's reports come from process 0 alone."""


def init_from_warning(config) -> str | None:
    """The warning for an AVA recipe started without `train.init_from` (it would train the
    backbone from scratch, far below the recipe's figures), or None. A config that means to
    start from scratch says so with `ava.expects_init_from=False` (configs/ava_demo.py)."""
    if not ava_inputs.is_ava(config) or config.train.init_from:
        return None
    if not config.ava.get("expects_init_from", False):
        return None
    return (
        "warning: train.init_from is empty: this AVA recipe fine-tunes a Kinetics-400 "
        "backbone, and without one it trains from scratch. Give "
        "--config.train.init_from=CHECKPOINT (a K400 run of the same model and frames), or "
        "--config.ava.expects_init_from=false to train from scratch on purpose."
    )


def _init_from(trainer, state, path: str, echo):
    """The fresh state with the model weights of the checkpoint at `path`; for the AVA
    detector the backbone's alone (a classifier's head is another task's), its head as
    initialised."""
    abstract = abstract_params(trainer.cfg)
    detector = trainer.cfg.task == "ava"
    if detector:
        abstract = {p: abstract[p] for p in backbone_paths(abstract)}
    params, step = checkpoint.restore_params(path, abstract)
    echo(f"weights from {path} (step {step}){', backbone only' if detector else ''}")
    if detector:
        params = flat_params(trainer.parts(state).model) | params
    return trainer.with_params(state, params)


def _loop(s: Setup, state, data, train_step, eval_step, ckpt, log, start, first_host, preempt):
    c = s.config.train
    final, pending, skipped = {}, [], 0
    bar = tqdm(total=s.total_steps, initial=start, unit="step", disable=not first_host)
    watch = nonfinite.Watch(c.max_nonfinite, bar.write if first_host else silent, ckpt.latest)
    window = LogWindow(bar.write if first_host else silent)
    for step in range(start, s.total_steps):
        batch = window.next(data)
        skipped += int(batch["skipped"].sum())
        window.count(len(batch["video"]) * jax.process_count())
        keys = detection_steps.TRAIN_KEYS if s.ava else TRAIN_KEYS
        state, metrics = train_step(state, device_batch(batch, s.trainer.mesh, keys))
        done = step + 1
        watch.dispatched(done, metrics["nonfinite"])
        pending.append(metrics)
        stop = preempt.reached(done)  # every process, every step
        if done % c.log_every == 0 or done == s.total_steps or stop:
            watch.flush()  # the last step too: a log is written at the last step and at a stop
            clips_per_s, waited = window.close()
            skipped_all = collect.sum_over_processes(skipped)  # every process takes part
            waiting = collect.mean_over_processes(waited)
            record = _mean(pending) | {
                "clips_per_s": clips_per_s,
                "input_wait": waiting,
                "skipped": skipped_all,
            }
            pending = []
            log.write(done, "train", record)
            shown = {"nonfinite": watch.total} if watch.total else {}
            bar.set_postfix(
                loss=f"{record['loss']:.3f}",
                lr=f"{record['lr']:.2e}",
                clips_s=f"{record['clips_per_s']:.1f}",
                input_wait=f"{waiting:.0%}",
                **shown,
            )
            final["train"] = record
        bar.update(1)
        epoch_end = done % s.steps_per_epoch == 0 or done == s.total_steps
        epoch = -(-done // s.steps_per_epoch)
        val = None
        if (
            epoch_end
            and s.val_source is not None
            and (epoch % c.eval_every == 0 or done == s.total_steps)
        ):
            val = _validate(s, state, eval_step)
            log.write(done, "val", val)
            final["val"] = val
            if first_host and s.ava:
                bar.write(f"epoch {epoch}: val frame-mAP {val['mAP']:.4f}")
            elif first_host:
                bar.write(f"epoch {epoch}: val top-1 {val['top1']:.4f}, top-5 {val['top5']:.4f}")
            window.restart()  # the window's figures are of training steps alone
        if epoch_end or (c.save_every and done % c.save_every == 0) or stop:
            ckpt.save(done, state, data, metrics=_best_metric(val, ckpt.metric))
            log.sync()  # a bucket's metrics.jsonl holds the records up to every checkpoint
        if stop:
            final["stopped"] = (  # said by `vmp` once the save is complete
                f"stopped after step {done} of {s.total_steps} ({preempt.cause}): "
                f"saved {ckpt.directory}/{done}; the same command resumes"
            )
            break
    bar.close()
    return state, final


def metric_name(config) -> str:
    """The validation figure that ranks the kept best checkpoint: "top1" for a classifier,
    "mAP" (frame-mAP) for the AVA detector."""
    return "mAP" if ava_inputs.is_ava(config) else "top1"


def _best_metric(val: dict | None, name: str) -> dict | None:
    """The checkpoint's metrics: the validation's figure `name` (`metric_name`), under its
    own name; None without a validation."""
    return None if val is None else {name: val[name]}


def _validate(s: Setup, state, eval_step) -> dict:
    if s.ava:
        detections, skipped = detection.predict(
            s.trainer, state, s.config, s.val_source, eval_step=eval_step
        )
        return detection.summary(s.scorer(detections), skipped)
    predictions, skipped = multiview.predict(
        s.trainer, state, s.config, s.val_source, eval_step=eval_step
    )
    return multiview.summary(predictions) | {"skipped": skipped}


# Metrics of the batch's values: meant over the finite steps alone (NaN if there were none).
OF_FINITE_STEPS = ("loss", "accuracy", "grad_norm")


def _mean(records: list[dict]) -> dict:
    """The mean of each metric over the steps (see OF_FINITE_STEPS), and the count of
    non-finite ones."""
    values = [{k: float(v) for k, v in r.items()} for r in records]
    finite = [r for r in values if not r["nonfinite"]]

    def mean(key: str) -> float:
        over = finite if key in OF_FINITE_STEPS else values
        return float(np.mean([r[key] for r in over])) if over else np.nan

    return {key: mean(key) for key in values[0]} | {"nonfinite": len(values) - len(finite)}
