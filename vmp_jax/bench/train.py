"""`vmp bench-train`: the train step of a recipe config on the devices, timed.

The clips are rendered in memory by the synthetic motion renderer at the config's frame count
and size, normalised, and placed on the mesh once, so the figures are the accelerator's, not
the input pipeline's (`vmp bench-data` measures that). The loss falls on them: the classes are
learnable motions (the first `classes` labels of the config's head). An AVA config (model.task
"ava") times the detector's step (`detection_steps`) on the same clips, each with ava.max_boxes
random boxes of which a random number are real, labelled with its motion; `vmp bench-train`
then times its classification twin (`classification_twin`: the same backbone, clips, batch,
dtype and scan, model.task "classify") the same way in the same process, and prints both side by
side with the ratio of their median step times: what the detection head (ROIAlign included)
adds.

The step is the one `vmp train` runs (AdamW, clipping, EMA, accumulation from the config), with
the recipe's warm-up and cosine schedule compressed to the run's steps. Reported: compile time, the
median and mean step time after `warmup` steps (each step waited for), clips/s at the median,
the compiled program's temp memory, the device's peak memory where the backend reports it
(GPUs do, the CPU does not), and the loss at the start and end; with `out`, the per-step
metrics (metrics.jsonl, TensorBoard) and the loss curve (curves.png).
"""

import dataclasses
import time

import jax
import numpy as np
from tqdm import tqdm

from vmp_jax.data import pipeline, resample, synthetic, transforms
from vmp_jax.data.device_augment import DeviceAugment
from vmp_jax.engine import detection_steps, optim, steps
from vmp_jax.engine.mixing import Mixing
from vmp_jax.engine.state import Trainer
from vmp_jax.train import metrics_log
from vmp_jax.train.loop import device_batch


@dataclasses.dataclass(frozen=True)
class Result:
    """What one run measured; times in seconds, memory in bytes (None: not reported)."""

    batch: int
    compile_s: float
    step_times: tuple[float, ...]
    losses: tuple[float, ...]
    temp_bytes: int | None
    peak_bytes: int | None

    @property
    def median_step(self) -> float:
        return float(np.median(self.step_times))

    @property
    def clips_per_s(self) -> float:
        return self.batch / self.median_step


def is_ava(config) -> bool:
    """Whether `config` is an AVA detector's (model.task "ava")."""
    return config.model.get("task", "classify") == "ava"


def classification_twin(config):
    """The classification model of an AVA config at its clip shape: the same backbone, clips,
    batch, dtype, scan algorithm, optimiser and num_classes, model.task "classify" (its head
    a linear layer on the CLS token instead of ROIAlign on the token map)."""
    twin = config.copy_and_resolve_references()
    twin.model.task = "classify"
    return twin


def synthetic_batches(config, batches: int, classes: int, seed: int) -> list[dict]:
    """`batches` host batches of learnable clips: video float32 (B, T, S, S, 3) normalised
    (with data.augment_on=device: uint8 on the canvas, with crop plans of the whole clip),
    label (B,)."""
    d, k = config.data, config.model.num_classes
    classes = min(classes, synthetic.MAX_CLASSES, k)
    rng = np.random.default_rng(seed)
    per_host = pipeline.per_host_batch(d.batch_size, "data.batch_size")
    out = []
    for _ in range(batches):
        labels = rng.integers(classes, size=per_host).astype(np.int32)
        videos = np.stack(
            [
                synthetic.render(int(y), classes, d.num_frames, d.img_size, d.img_size, rng)
                for y in labels
            ]
        )  # (B, T, S, S, 3) uint8
        if d.augment_on == "host":
            out.append({"video": transforms.normalize(videos), "label": labels})
            continue
        canvas = resample.canvas_of(d)
        placed = pipeline.on_canvas(videos.reshape(-1, *videos.shape[2:]), canvas)[0]
        plan = resample.crop_plan((0, 0, d.img_size, d.img_size), d.img_size, canvas)
        plans = {k: np.stack([v] * per_host) for k, v in plan.items()}  # the whole frame
        out.append({"video": placed.reshape(per_host, -1, *canvas, 3), "label": labels} | plans)
    return out


def with_boxes(config, batch: dict, rng) -> dict:
    """An AVA train batch of a classification one: ava.max_boxes (K) random boxes per clip
    (1..K of them real), each labelled with the clip's class (the detector's TRAIN_KEYS)."""
    b, k, s = len(batch["label"]), config.ava.max_boxes, config.data.img_size
    corner = rng.uniform(0, s / 2, (b, k, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(s / 8, s / 2, (b, k, 2))], -1)
    mask = np.arange(k) < rng.integers(1, k + 1, (b, 1))  # (B, K)
    labels = np.zeros((b, k, config.model.num_classes), np.float32)
    labels[np.arange(b), :, batch["label"]] = 1.0
    return {
        "video": batch["video"],
        "boxes": boxes.astype(np.float32),
        "box_mask": mask,
        "labels": labels * mask[..., None],
    }


def run(
    config, *, num_steps: int, warmup: int = 3, batches: int = 4, classes: int = 4, out=None
) -> Result:
    """Compiles and runs `num_steps` train steps on `batches` distinct batches, cycled."""
    if num_steps <= warmup:
        raise ValueError(f"--steps ({num_steps}) must exceed --warmup ({warmup})")
    per_epoch = -(-num_steps // max(1, int(config.optim.epochs)))  # schedule >= num_steps
    trainer = Trainer.from_config(config, steps_per_epoch=per_epoch)
    schedule = optim.schedule(config, per_epoch)
    host_batches = synthetic_batches(config, batches, classes, config.seed)
    ava = is_ava(config)
    if ava:
        rng = np.random.default_rng(config.seed)
        host_batches = [with_boxes(config, b, rng) for b in host_batches]
    keys = detection_steps.TRAIN_KEYS if ava else None
    data = [device_batch(b, trainer.mesh, *([keys] if keys else [])) for b in host_batches]
    state = trainer.init()
    if ava:
        train_step = detection_steps.make_train_step(
            trainer, accum_steps=config.optim.accum_steps, schedule=schedule
        )
    else:
        train_step = steps.make_train_step(
            trainer,
            accum_steps=config.optim.accum_steps,
            schedule=schedule,
            mixing=Mixing.from_config(config),
            augment=DeviceAugment.for_config(config),
        )
    start = time.perf_counter()
    compiled = train_step.lower(state, data[0]).compile()
    compile_s = time.perf_counter() - start
    times, records = [], []
    log = metrics_log.MetricsLog(out) if out else None
    for step in tqdm(range(num_steps), unit="step"):
        start = time.perf_counter()
        state, metrics = compiled(state, data[step % batches])
        metrics = jax.device_get(metrics)  # waits for the step
        times.append(time.perf_counter() - start)
        records.append({k: float(v) for k, v in metrics.items()})
        if log:
            log.write(step + 1, "train", records[-1] | {"step_ms": 1e3 * times[-1]})
    if log:
        log.close()
        metrics_log.plot_curves(log.records(), f"{out}/curves.png")
    return Result(
        batch=config.data.batch_size,
        compile_s=compile_s,
        step_times=tuple(times[warmup:]),
        losses=tuple(r["loss"] for r in records),
        temp_bytes=_temp_bytes(compiled),
        peak_bytes=_peak_bytes(),
    )


def _temp_bytes(compiled) -> int | None:
    analysis = compiled.memory_analysis()
    return None if analysis is None else int(analysis.temp_size_in_bytes)


def _peak_bytes() -> int | None:
    """The largest peak over this host's devices, where the backend keeps the statistic."""
    peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in jax.local_devices()]
    peaks = [p for p in peaks if p is not None]
    return max(peaks) if peaks else None


def format_table(config, result: Result, baseline: Result | None = None) -> str:
    """The run's figures; with `baseline` (an AVA config's classification twin timed in the same
    run), a column each and the detection / classification ratio of the median step times."""
    m, d = config.model, config.data
    gib = lambda b: "n/a" if b is None else f"{b / 2**30:.2f}"  # noqa: E731
    device = jax.devices()[0]
    head = (
        f"train step: {m.embed_dim}x{m.depth} (residual_ssm {m.residual_ssm}, mask "
        f"{m.bwd_mask_diagonal}), {d.num_frames}x{d.img_size}x{d.img_size}, global batch "
        f"{result.batch}, {m.dtype}, scan {m.scan_algorithm}, remat {m.remat}, on "
        f"{jax.device_count()} x {device.device_kind} (jax {jax.__version__})"
    )
    figures = [
        ("compile s", lambda r: f"{r.compile_s:.1f}"),
        ("step ms (median)", lambda r: f"{1e3 * r.median_step:.1f}"),
        ("step ms (mean)", lambda r: f"{1e3 * float(np.mean(r.step_times)):.1f}"),
        ("clips/s", lambda r: f"{r.clips_per_s:.{3 if r.clips_per_s < 1 else 1}f}"),
        ("compiled temp GiB", lambda r: gib(r.temp_bytes)),
        ("peak device GiB", lambda r: gib(r.peak_bytes)),
        ("loss first -> last", lambda r: f"{r.losses[0]:.4f} -> {r.losses[-1]:.4f}"),
        ("timed steps", lambda r: str(len(r.step_times))),
    ]
    results = [result] if baseline is None else [result, baseline]
    rows = [] if baseline is None else [("head", ["detection", "classification"])]
    rows += [(name, [figure(r) for r in results]) for name, figure in figures]
    width = max(len(k) for k, _ in rows)
    columns = [max(len(v[i]) for _, v in rows) for i in range(len(results))]
    lines = [head] + [
        f"  {k:<{width}}  "
        + "  ".join(f"{v:<{w}}" for v, w in zip(vs, columns, strict=False)).rstrip()
        for k, vs in rows
    ]
    if baseline is not None:
        ratio = result.median_step / baseline.median_step
        lines.append(
            f"  detection / classification step time: {ratio:.3f} "
            f"(the head adds {100 * (ratio - 1):+.1f}%)"
        )
    return "\n".join(lines)
