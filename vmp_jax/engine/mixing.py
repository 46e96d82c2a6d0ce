"""Mixup / cutmix and label smoothing, on the device, over the whole global batch.

timm's Mixup in batch mode: each video is mixed with the global batch's reversed order, one
lambda (and, for cutmix, one box pasted on every frame) per step. It runs inside the jitted
train step rather than on each host's share, so that global batch i is mixed the same however
many processes read it (the pairing spans hosts: a host's first video is paired with the last
host's last) and a resumed run mixes as the uninterrupted one did: the draws come from
(`seed`, the optimiser step) alone.
"""

import dataclasses

import jax
import jax.numpy as jnp


def smooth_one_hot(labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
    """int (B,) -> float32 (B, K): 1 - s + s/K on the label, s/K elsewhere."""
    return jax.nn.one_hot(labels, num_classes) * (1.0 - smoothing) + smoothing / num_classes


@dataclasses.dataclass(frozen=True)
class Mixing:
    """The batch-mixing settings of `data` and `optim.label_smoothing`."""

    num_classes: int
    mixup: float = 0.0
    cutmix: float = 0.0
    switch_prob: float = 0.5
    smoothing: float = 0.0
    seed: int = 0

    @classmethod
    def from_config(cls, config) -> "Mixing":
        d = config.data
        return cls(
            num_classes=config.model.num_classes,
            mixup=d.mixup,
            cutmix=d.cutmix,
            switch_prob=d.mixup_switch_prob,
            smoothing=config.optim.label_smoothing,
            seed=config.seed + 1,
        )

    def __call__(self, video: jax.Array, label: jax.Array, step) -> tuple[jax.Array, jax.Array]:
        """video (B, T, H, W, C), label int (B,), the optimiser step -> (mixed video, soft
        targets float32 (B, K))."""
        if self.mixup <= 0 and self.cutmix <= 0:  # no key: the program does not hold the seed
            return video, smooth_one_hot(label, self.num_classes, self.smoothing)
        return mix_batch(
            video,
            label,
            self._key(step),
            num_classes=self.num_classes,
            mixup=self.mixup,
            cutmix=self.cutmix,
            switch_prob=self.switch_prob,
            smoothing=self.smoothing,
        )

    def _key(self, step) -> jax.Array:
        return jax.random.fold_in(jax.random.key(self.seed), step)

    def kind(self, step: int) -> str:
        """What the train step does to the batch at optimiser step `step`: "mixup", "cutmix"
        or "none" (the draw `mix_batch` makes, on the host)."""
        if self.mixup <= 0 and self.cutmix <= 0:
            return "none"
        if self.mixup <= 0 or self.cutmix <= 0:
            return "mixup" if self.cutmix <= 0 else "cutmix"
        switch_key = jax.random.split(self._key(step), 3)[0]
        return "cutmix" if bool(_draws_cutmix(switch_key, self.switch_prob)) else "mixup"


def mix_batch(video, label, key, *, num_classes, mixup, cutmix, switch_prob, smoothing):
    """(video (B, T, H, W, C), targets (B, K)): cutmix (chosen with `switch_prob` when both are
    on) pastes the same box on every frame and corrects lambda to the pasted area."""
    target = smooth_one_hot(label, num_classes, smoothing)
    if mixup <= 0 and cutmix <= 0:
        return video, target
    switch_key, lam_key, box_key = jax.random.split(key, 3)
    flipped = video[::-1]

    def blend(_):
        lam = jax.random.beta(lam_key, mixup, mixup)
        return video * lam.astype(video.dtype) + flipped * (1 - lam).astype(video.dtype), lam

    def paste(_):
        return _cutmix(video, flipped, jax.random.beta(lam_key, cutmix, cutmix), box_key)

    if cutmix <= 0:
        video, lam = blend(None)
    elif mixup <= 0:
        video, lam = paste(None)
    else:
        video, lam = jax.lax.cond(_draws_cutmix(switch_key, switch_prob), paste, blend, None)
    return video, target * lam + target[::-1] * (1.0 - lam)


def _draws_cutmix(switch_key, switch_prob) -> jax.Array:
    """Whether a step with both mixup and cutmix on takes cutmix."""
    return jax.random.uniform(switch_key) < switch_prob


def _cutmix(video, flipped, lam, key):
    """The box of area ~(1 - lam) around a uniform centre, clipped to the frame, taken from
    `flipped`; returns (video, lambda corrected to the pasted area)."""
    _, _, h, w, _ = video.shape
    cut = jnp.sqrt(1.0 - lam)
    half_h, half_w = (h * cut).astype(jnp.int32) // 2, (w * cut).astype(jnp.int32) // 2
    y_key, x_key = jax.random.split(key)
    cy, cx = jax.random.randint(y_key, (), 0, h), jax.random.randint(x_key, (), 0, w)
    y0, y1 = jnp.clip(cy - half_h, 0, h), jnp.clip(cy + half_h, 0, h)
    x0, x1 = jnp.clip(cx - half_w, 0, w), jnp.clip(cx + half_w, 0, w)
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)  # (H, W)
    video = jnp.where(box[None, None, :, :, None], flipped, video)
    return video, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
