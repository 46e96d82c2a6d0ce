"""The paper's section 3 view of one layer: the similarity matrices M of its two scans.

For a layer K and a group of channels, on one video: the forward scan's M_f, the backward
scan's M_b, the backward scan's M with its diagonal masked (VMP's fix 1), and M_f + masked M_b,
the bidirectional matrix VMP applies. Each is the mean over the group's channels of the exact
(L, L) matrix of `vmp_jax.ssm.reference.similarity_matrix`, with the layer's own delta, A, B
and C computed from the video (and the model's residual-SSM setting).
"""

import dataclasses
import io

import jax
import jax.numpy as jnp
import numpy as np

from vmp_jax import storage
from vmp_jax.models.videomamba import VideoMamba
from vmp_jax.ssm.reference import similarity_matrix

NAMES = ("M_f", "M_b", "M_b_masked", "M_sum")


@dataclasses.dataclass(frozen=True)
class LayerMatrices:
    layer: int
    channels: tuple[int, int]  # [start, stop) of d_inner
    matrices: dict[str, np.ndarray]  # NAMES -> float32 (L, L)


def mixer_inputs(model: VideoMamba, video: jax.Array, layer: int):
    """The scan inputs of block `layer` on `video` (b, T, H, W, 3), in eval mode."""
    depth = model.cfg.depth
    if not 0 <= layer < depth:
        raise ValueError(
            f"--layer must be in 0..{depth - 1} for a {depth}-block model, got {layer}"
        )
    hidden, residual = model.features(video, upto=layer)
    hidden = hidden.astype(jnp.float32)  # eval: no drop path on the residual branch
    residual = hidden if residual is None else residual + hidden
    block = model.block(layer)
    normed = block.norm(residual).astype(block.compute_dtype)  # (b, l, C)
    return block.mixer.scan_inputs(normed)


def layer_matrices(
    model: VideoMamba, video: jax.Array, layer: int, channels: tuple[int, int]
) -> LayerMatrices:
    """M_f, M_b, masked M_b and their sum for the first video of the batch, averaged over
    d_inner channels [start, stop)."""
    start, stop = channels
    d_inner = model.cfg.d_inner
    if not 0 <= start < stop <= d_inner:
        raise ValueError(f"--channels must satisfy 0 <= start < stop <= {d_inner}, got {channels}")
    fwd, bwd, _ = mixer_inputs(model, video[:1], layer)
    residual = model.cfg.residual_ssm

    def mean_m(inputs, **options):  # -> (L, L)
        m = similarity_matrix(
            inputs.delta[..., start:stop],
            inputs.A[start:stop],
            inputs.B,
            inputs.C,
            residual=residual,
            **options,
        )  # (1, g, L, L)
        return np.asarray(m[0].mean(0), np.float32)

    m_f = mean_m(fwd)
    m_b = mean_m(bwd, reverse=True)
    m_b_masked = mean_m(bwd, reverse=True, mask_diagonal=True)
    matrices = dict(zip(NAMES, (m_f, m_b, m_b_masked, m_f + m_b_masked), strict=True))
    return LayerMatrices(layer, (start, stop), matrices)


def save(result: LayerMatrices, out_prefix: str) -> list[str]:
    """Writes OUT.npz (the four matrices, layer, channels) and one heatmap PNG per matrix plus a
    2x2 panel OUT.png; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import SymLogNorm

    paths = [f"{out_prefix}.npz"]
    arrays = io.BytesIO()
    np.savez(arrays, layer=result.layer, channels=np.array(result.channels), **result.matrices)
    storage.write_bytes(paths[0], arrays.getvalue())
    scale = max(float(np.abs(m).max()) for m in result.matrices.values()) or 1.0
    norm = SymLogNorm(linthresh=scale * 1e-3, vmin=-scale, vmax=scale)
    title = f"layer {result.layer}, channels {result.channels[0]}:{result.channels[1]}"
    panel, axes = plt.subplots(2, 2, figsize=(11, 10))
    for ax, (name, m) in zip(axes.flat, result.matrices.items(), strict=True):
        ax.imshow(m, cmap="RdBu_r", norm=norm, interpolation="nearest")
        ax.set_title(f"{name} ({title})", fontsize=9)
        ax.set_xlabel("source token s")
        ax.set_ylabel("output token t")
        single, one = plt.subplots(figsize=(6, 5))
        image = one.imshow(m, cmap="RdBu_r", norm=norm, interpolation="nearest")
        one.set_title(f"{name}: {title}", fontsize=9)
        single.colorbar(image, ax=one)
        paths.append(f"{out_prefix}_{name}.png")
        storage.save_png(single, paths[-1], dpi=120)
        plt.close(single)
    storage.save_png(panel, f"{out_prefix}.png", dpi=120)
    plt.close(panel)
    return [*paths, f"{out_prefix}.png"]
