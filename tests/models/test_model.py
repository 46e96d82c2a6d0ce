"""The VideoMamba / VideoMambaPro model against SPEC section 5."""

import dataclasses
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tests.conftest import XLA_DEFAULT_COMPILE
from tests.ssm.cases import ScanInputs, assert_close, spec_loop
from vmp_jax.engine.sharding import make_mesh
from vmp_jax.engine.state import flat_params, set_params
from vmp_jax.models import ModelConfig, VideoMamba, layers, preset
from vmp_jax.models.embed import resize_spatial, resize_temporal
from vmp_jax.models.mixer import BiMambaMixer
from vmp_jax.models.videomamba import abstract_params
from vmp_jax.ssm import similarity_matrix

TINY = dict(depth=2, num_frames=2, img_size=32, num_classes=5, embed_dim=32, d_state=4)


def _video(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _eval_model(cfg: ModelConfig, seed=0) -> VideoMamba:
    model = VideoMamba(cfg, rngs=nnx.Rngs(seed))
    model.eval()
    return model


@pytest.mark.slow
def test_vmp_ti_logits_agree_across_scan_algorithms():
    """Same parameters (same seed), full VMP-Ti at 8 x 224 x 224, one clip, 24 blocks of
    1569-token scans: the CPU's kernels (`cpu`, what `auto` runs here), XLA's token loop
    (`sequential`) and the TPU's `chunked` agree. `chunked` runs 2-token chunks, its fastest on
    a CPU (18 s against 52 at its default 16: dense work per token grows with the chunk); its
    default tiling is checked against the reference in value and gradient at small shapes
    (tests/ssm), as is every algorithm."""
    video = _video(0, (1, 8, 224, 224, 3))
    logits = {}
    for algorithm, blocks in (("cpu", {}), ("sequential", {}), ("chunked", {"scan_chunk_size": 2})):
        cfg = preset("ti", pro=True, scan_algorithm=algorithm, scan_layers=True, **blocks)
        graph, weights = nnx.split(_eval_model(cfg))
        # XLA's default optimisation: at the suite's -O0 this forward takes 2.3x as long.
        forward = jax.jit(
            lambda w, v, g=graph: nnx.merge(g, w)(v), compiler_options=XLA_DEFAULT_COMPILE
        )
        logits[algorithm] = np.asarray(forward(weights, video))
    assert logits["cpu"].shape == (1, 400)
    for algorithm in ("sequential", "chunked"):
        assert_close(logits[algorithm], logits["cpu"], 2e-5, algorithm)


def _conv_causal(x, kernel, bias):
    """Independent depthwise causal conv: PyTorch Conv1d(groups=d, padding=w-1)[..., :l]."""
    w = kernel.shape[0]
    padded = np.pad(x, [(0, 0), (w - 1, 0), (0, 0)])
    return sum(kernel[k] * padded[:, k : k + x.shape[1]] for k in range(w)) + bias


def _bimamba_v2(mixer: BiMambaMixer, hidden: np.ndarray, *, mask_backward: bool) -> np.ndarray:
    """VideoMamba's bimamba v2, written out in float64 from the mixer's parameters: the
    backward branch flips the sequence, runs a causal conv and a causal scan, flips back."""
    p = jax.tree.map(lambda v: np.asarray(v, np.float64), nnx.to_pure_dict(nnx.state(mixer)))
    silu = lambda v: v / (1.0 + np.exp(-v))  # noqa: E731
    softplus = lambda v: np.log1p(np.exp(v))  # noqa: E731
    xz = hidden @ p["in_proj"]["kernel"]
    x, z = np.split(xz, 2, axis=-1)
    r, n = mixer.cfg.rank, mixer.cfg.d_state

    def branch(d, x, z, mask):
        u = silu(_conv_causal(x, d["conv_kernel"], d["conv_bias"]))
        proj = u @ d["x_proj"]["kernel"]
        delta = softplus(proj[..., :r] @ d["dt_proj"]["kernel"] + d["dt_proj"]["bias"])
        inputs = ScanInputs(
            u, delta, -np.exp(d["A_log"]), proj[..., r : r + n], proj[..., r + n :], d["D"], z
        )
        return spec_loop(inputs, reverse=False, mask_diagonal=mask, residual=False)

    y_f = branch(p["fwd"], x, z, False)
    y_b = branch(p["bwd"], x[:, ::-1], z[:, ::-1], mask_backward)[:, ::-1]
    return (y_f + y_b) @ p["out_proj"]["kernel"]


@pytest.mark.parametrize("mask_backward", [False, True])
def test_mixer_is_videomamba_bimamba_v2(mask_backward):
    cfg = ModelConfig(**TINY, bwd_mask_diagonal=mask_backward, scan_algorithm="sequential")
    mixer = BiMambaMixer(cfg, rngs=nnx.Rngs(3))
    hidden = np.asarray(_video(1, (2, 9, cfg.embed_dim)))
    want = _bimamba_v2(mixer, hidden.astype(np.float64), mask_backward=mask_backward)
    assert_close(mixer(jnp.asarray(hidden)), want, 2e-5, "mixer vs bimamba v2")


def test_masking_zeroes_the_backward_diagonal_and_nothing_else():
    plain = ModelConfig(**TINY, scan_algorithm="sequential")
    masked = dataclasses.replace(plain, bwd_mask_diagonal=True)
    mixer = BiMambaMixer(plain, rngs=nnx.Rngs(4))
    mixer_masked = BiMambaMixer(masked, rngs=nnx.Rngs(4))
    for m in (mixer, mixer_masked):  # steps of order 1 (not 1e-2 as at init): a visible diagonal
        m.bwd.dt_proj.bias[...] = jnp.full_like(m.bwd.dt_proj.bias[...], 1.0)
        for ssm in (m.fwd, m.bwd):  # D at 1 (init) would dwarf the diagonal term in the
            ssm.D[...] = jnp.full_like(ssm.D[...], 0.05)  # outputs whose difference is compared
    hidden = _video(2, (1, 7, plain.embed_dim))
    fwd, bwd, z = mixer.scan_inputs(hidden)
    M = similarity_matrix(bwd.delta, bwd.A, bwd.B, bwd.C, reverse=True)  # (b, d, l, l)
    M_masked = similarity_matrix(bwd.delta, bwd.A, bwd.B, bwd.C, reverse=True, mask_diagonal=True)
    eye = jnp.eye(M.shape[-1], dtype=bool)
    assert float(jnp.abs(jnp.diagonal(M, axis1=2, axis2=3)).min()) > 0
    np.testing.assert_array_equal(jnp.diagonal(M_masked, axis1=2, axis2=3), 0.0)
    np.testing.assert_allclose(jnp.where(eye, 0.0, M), M_masked, rtol=1e-6, atol=1e-7)
    # In the mixer's output the mask removes exactly the diagonal term of the backward scan.
    diagonal = jnp.diagonal(M, axis1=2, axis2=3).transpose(0, 2, 1)  # (b, l, d)
    removed = mixer.out_proj(-diagonal * bwd.u * jax.nn.silu(z))
    # A difference of two float32 outputs: with D at 0.05 rounding is about 4e-5 of the removed
    # term (1e-3 with D at 1); a mask that also dropped the D skip would be off by about 1.
    assert_close(mixer_masked(hidden) - mixer(hidden), removed, 1e-3, "masked - plain")


def test_vmp_switches_remove_the_backward_delta_projection():
    vm, vmp = preset("ti", pro=False, **TINY), preset("ti", pro=True, **TINY)
    mixer_vm = BiMambaMixer(vm, rngs=nnx.Rngs(0))
    mixer_vmp = BiMambaMixer(vmp, rngs=nnx.Rngs(0))
    assert hasattr(mixer_vm.bwd, "dt_proj") and not hasattr(mixer_vmp.bwd, "dt_proj")
    assert mixer_vmp.bwd.x_proj.kernel.shape == (vmp.d_inner, 2 * vmp.d_state)
    assert mixer_vm.bwd.x_proj.kernel.shape == (vm.d_inner, vm.rank + 2 * vm.d_state)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((2, 32, 32, 3), r"video has shape \(2, 32, 32, 3\) \(rank 4\); expected \(batch, frames"),
        ((1, 2, 32, 32, 4), r"video has shape \(1, 2, 32, 32, 4\) with 4 channels"),
        ((1, 2, 30, 32, 3), r"video has shape \(1, 2, 30, 32, 3\).*divisible by 16"),
    ],
)
def test_bad_video_shapes_are_named(shape, message):
    model = _eval_model(ModelConfig(**TINY))
    with pytest.raises(ValueError, match=message):
        model(jnp.zeros(shape))


def test_other_frame_counts_and_resolutions_interpolate_the_embeddings():
    model = _eval_model(ModelConfig(**TINY))
    assert model(_video(0, (1, 4, 48, 64, 3))).shape == (1, 5)
    pos, temporal = model.embed.pos_embed[...], model.embed.temporal_pos_embedding[...]
    assert resize_spatial(pos, (2, 2)) is pos and resize_temporal(temporal, 2) is temporal
    assert resize_spatial(pos, (3, 4)).shape == (13, 32)
    np.testing.assert_array_equal(resize_spatial(pos, (3, 4))[0], pos[0])  # CLS row kept
    image = temporal[:1]  # an image model (T = 1) inflates to video by repetition
    np.testing.assert_allclose(resize_temporal(image, 8), jnp.repeat(image, 8, 0), rtol=1e-6)


def test_embedding_interpolation_values(seed):
    """Bicubic in space (Keys' kernel, a = -0.5, half-pixel centres): the same values as PIL's
    bicubic resize when enlarging (224 to 256 px is a 14 to 16 patch grid); linear in time with
    half-pixel centres (PyTorch's align_corners=False): 2 frames to 3 are the first, their
    midpoint and the last."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for g, grid in ((2, (3, 4)), (14, (16, 18))):
        pos = rng.standard_normal((1 + g * g, 3)).astype(np.float32)
        ours = np.asarray(resize_spatial(jnp.asarray(pos), grid))[1:].reshape(*grid, 3)
        for c in range(3):
            image = Image.fromarray(pos[1:, c].reshape(g, g), mode="F")
            want = np.asarray(image.resize((grid[1], grid[0]), Image.Resampling.BICUBIC))
            np.testing.assert_allclose(ours[..., c], want, atol=1e-5, rtol=1e-5)
    temporal = rng.standard_normal((2, 5)).astype(np.float32)
    three = np.stack([temporal[0], (temporal[0] + temporal[1]) / 2, temporal[1]])
    np.testing.assert_allclose(resize_temporal(jnp.asarray(temporal), 3), three, rtol=1e-6)


def test_initialisation_is_mambas():
    cfg = ModelConfig(**TINY)
    model = VideoMamba(cfg, rngs=nnx.Rngs(0))
    direction = model.layers[0].mixer.fwd
    np.testing.assert_allclose(direction.A_log[...][5], np.log(np.arange(1, cfg.d_state + 1)))
    np.testing.assert_array_equal(direction.D[...], 1.0)
    dt = jax.nn.softplus(direction.dt_proj.bias[...])
    assert float(dt.min()) >= 1e-3 * 0.999 and float(dt.max()) <= 1e-1 * 1.001
    assert float(jnp.abs(direction.dt_proj.kernel[...]).max()) <= cfg.rank**-0.5
    np.testing.assert_array_equal(model.embed.cls_token[...], 0.0)
    np.testing.assert_array_equal(model.embed.temporal_pos_embedding[...], 0.0)
    assert 0.015 < float(jnp.std(model.embed.pos_embed[...])) < 0.025
    # Linear weights: truncated normal, std 0.02 (out_proj / sqrt(depth)), different per
    # output (a constant kernel, as a positional dtype slip once gave, makes every channel
    # of a block's output equal).
    mixer = model.layers[0].mixer
    expected = {
        "in_proj": (mixer.in_proj.kernel, 0.02),
        "out_proj": (mixer.out_proj.kernel, 0.02 / np.sqrt(cfg.depth)),
        "x_proj": (direction.x_proj.kernel, 0.02),
        "head": (model.head.kernel, 0.02),
    }
    for name, (kernel, std) in expected.items():
        w = np.asarray(kernel[...])
        assert 0.8 * std < w.std() < 1.05 * std, (name, w.std(), std)
        assert np.abs(w).max() <= 2 * std * 1.0001, name
        assert np.all(w.std(axis=0) > 0.5 * std), name  # every output column varies
    np.testing.assert_array_equal(model.head.bias[...], 0.0)


def test_every_parameter_has_logical_axis_names():
    model = nnx.eval_shape(lambda: VideoMamba(ModelConfig(**TINY), rngs=nnx.Rngs(0)))
    params = jax.tree.leaves(
        nnx.state(model, nnx.Param), is_leaf=lambda x: isinstance(x, nnx.Variable)
    )
    assert params
    for p in params:
        names = p.get_metadata().get("out_sharding")
        assert names is not None and len(names) == p.shape.__len__(), p
        assert all(isinstance(name, str) for name in names)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = _eval_model(ModelConfig(**TINY, dtype="bfloat16"))
    f32 = _eval_model(ModelConfig(**TINY))
    video = _video(5, (2, 2, 32, 32, 3))
    logits = model(video)
    assert logits.dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert_close(logits, f32(video), 5e-2, "bf16 vs f32 logits")


def test_remat_changes_neither_value_nor_gradient():
    video = _video(6, (1, 2, 32, 32, 3))

    def loss(model):
        return jnp.sum(model(video) ** 2)

    grads = {}
    for remat in (False, True):
        model = _eval_model(ModelConfig(**TINY, remat=remat))
        grads[remat] = nnx.grad(loss)(model)
    for a, b in zip(jax.tree.leaves(grads[False]), jax.tree.leaves(grads[True]), strict=True):
        assert_close(b, a, 1e-5, "remat grad")


def test_drop_path_and_dropout_are_stochastic_in_training_only():
    cfg = ModelConfig(**TINY, drop_path_rate=0.5, head_dropout=0.5)
    model = VideoMamba(cfg, rngs=nnx.Rngs(params=0, dropout=1))
    video = _video(7, (4, 2, 32, 32, 3))
    train_a, train_b = model(video), model(video)
    assert not np.allclose(train_a, train_b)
    model.eval()
    np.testing.assert_array_equal(model(video), model(video))


def _share_weights_and_rngs(loop: VideoMamba, scan: VideoMamba) -> None:
    """Gives the stacked model the looped one's weights and RNG streams (its extra streams,
    of the rate-0 blocks 0 and 1, are never drawn from)."""
    set_params(scan, flat_params(loop))
    given = {path: v[...] for path, v in nnx.to_flat_state(nnx.state(loop, nnx.RngState))}
    flat = dict(nnx.to_flat_state(nnx.state(scan, nnx.RngState)))
    for path, variable in flat.items():
        value = variable[...]
        if path in given:
            value = given[path]
        elif path[0] == "layers":
            for i in range(loop.cfg.depth):
                if (path[0], i, *path[1:]) in given:
                    value = value.at[i].set(given[(path[0], i, *path[1:])])
        flat[path] = variable.replace(value)
    nnx.update(scan, nnx.from_flat_state(flat))


@pytest.mark.parametrize("remat", [False, True], ids=["plain", "remat"])
@pytest.mark.parametrize("drop_path_rate", [0.0, 0.3], ids=["no-drop-path", "drop-path"])
def test_scanned_layers_equal_the_loop(drop_path_rate, remat, seed):
    """`scan_layers`: with the same weights and RNG streams, the same logits, gradients,
    drop-path masks and RNG counts as the Python loop over blocks, in training mode; the
    weights convert between the layouts losslessly."""
    video = _video(seed, (3, 2, 32, 32, 3))
    # 4 blocks: blocks 0-3 are read below (features up to 3, block 3), each with its own rate.
    tiny = dict(TINY, depth=4, drop_path_rate=drop_path_rate, remat=remat)
    loop = VideoMamba(ModelConfig(**tiny), rngs=nnx.Rngs(seed, dropout=1))
    scan = VideoMamba(ModelConfig(**tiny, scan_layers=True), rngs=nnx.Rngs(seed, dropout=1))
    assert nnx.state(scan, nnx.Param)["layers"]["norm"]["weight"].shape == (4, 32)
    _share_weights_and_rngs(loop, scan)
    for path, value in flat_params(loop).items():
        np.testing.assert_array_equal(flat_params(scan)[path], value)

    def loss(model):
        return jnp.sum(model(video) ** 2)

    v_loop, g_loop = nnx.jit(nnx.value_and_grad(loss))(loop)
    v_scan, g_scan = nnx.jit(nnx.value_and_grad(loss))(scan)
    assert_close(v_scan, v_loop, 1e-6, "loss")
    g_loop, g_scan = dict(nnx.to_flat_state(g_loop)), dict(nnx.to_flat_state(g_scan))
    g_scan = layers.unstack({k: v[...] for k, v in g_scan.items()}, 4)
    assert g_scan.keys() == g_loop.keys()
    for path, value in g_loop.items():  # float32 sums reassociated by XLA: ~2e-5 seen
        assert_close(g_scan[path], value[...], 1e-4, f"grad {path}")
    loop.eval(), scan.eval()
    hidden, residual = scan.features(video, upto=3)  # as `vmp similarity` reads block 3
    assert_close(hidden, loop.features(video, upto=3)[0], 1e-5, "hidden after 3 blocks")
    assert_close(scan.block(3).norm(residual), loop.layers[3].norm(residual), 0, "block 3")
    counts = dict(nnx.to_flat_state(nnx.state(scan, nnx.RngState)))
    for path, variable in nnx.to_flat_state(nnx.state(loop, nnx.RngState)):
        if path[0] == "layers" and path[-2:] == ("dropout", "count"):
            stacked = counts[(path[0], *path[2:])][...]
            assert int(stacked[path[1]]) == int(variable[...]) == 1, path


def test_a_stacked_checkpoint_loads_per_block(tmp_path):
    """Weights saved by a scan_layers run read back per block (vmp eval, export, init_from)."""
    from vmp_jax.engine import checkpoint
    from vmp_jax.engine.state import Trainer

    cfg = ModelConfig(**TINY, scan_layers=True)
    mesh = make_mesh(SimpleNamespace(data=1, fsdp=8))  # the weights split over "embed"
    trainer = Trainer(cfg, optax.sgd(0.1), mesh)
    state = trainer.init()
    ckpt = checkpoint.Checkpoints(str(tmp_path), async_save=False)
    ckpt.save(0, state)
    ckpt.wait()
    ckpt.close()
    params, step = checkpoint.restore_params(str(tmp_path), abstract_params(cfg))
    want = flat_params(trainer.model(state))
    assert step == 0 and params.keys() == want.keys()
    for path, value in want.items():
        np.testing.assert_array_equal(params[path], value)


def _host_values(state) -> dict:
    """{path: numpy} of a train state, PRNG keys as their key data, blocks per block."""
    flat = {}
    for path, v in nnx.to_flat_state(state):
        value = v[...]
        if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            value = jax.random.key_data(value)
        flat[path] = np.asarray(value)
    return layers.unstack(flat, 3)


def test_a_run_resumes_in_the_other_block_layout(tmp_path, seed):
    """Saved with scan_layers, resumed without, and back: weights, EMA, Adam moments, step and
    drop-path RNG streams carry over exactly; the per-block layout has no streams for the
    rate-0 blocks 0 and 1, so the stacked one gets fresh ones there."""
    from vmp_jax.engine import checkpoint
    from vmp_jax.engine.state import Trainer

    tiny = dict(TINY, depth=3, drop_path_rate=0.3)
    mesh = make_mesh(SimpleNamespace(data=1, fsdp=8))
    trainers = {
        scan: Trainer(ModelConfig(**tiny, scan_layers=scan), optax.adamw(0.1), mesh, ema_decay=0.9)
        for scan in (True, False)
    }
    rng = np.random.default_rng(seed)
    state = jax.tree.map(  # every float leaf random, the moments included
        lambda x: (
            x + rng.standard_normal(x.shape).astype(x.dtype)
            if jnp.issubdtype(x.dtype, jnp.floating)
            else x
        ),
        trainers[True].init(),
    )
    first, second = (checkpoint.Checkpoints(str(tmp_path / n), async_save=False) for n in "ab")
    first.save(0, state)
    first.wait()
    looped = first.restore(0, trainers[False].abstract_placed())
    want, got = _host_values(state), _host_values(looped)
    assert got.keys() <= want.keys() and any("mu" in p for p in got)
    for path, value in got.items():
        np.testing.assert_array_equal(value, want[path], err_msg=str(path))
    second.save(0, looped)
    second.wait()
    back = _host_values(second.restore(0, trainers[True].abstract_placed()))
    assert back.keys() == want.keys()
    fresh = [p for p in want if p not in got]
    assert fresh and all(p[1] == "layers" and p[2] in (0, 1) and "rngs" in p for p in fresh)
    for path, value in back.items():
        if path not in fresh:
            np.testing.assert_array_equal(value, want[path], err_msg=str(path))
    first.close(), second.close()
