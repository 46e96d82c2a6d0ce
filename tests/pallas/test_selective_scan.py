"""The Pallas selective-scan kernels equal `reference` in value and gradient.

Every test runs in Pallas' interpreter on CPU (the CPU half, always) and natively when a GPU is
present (the `gpu` half, marked). Small block sizes keep the interpreter fast and exercise the
padding of D and n, several chunks and a partial last chunk, split into segments; the default
blocks (unsplit off a GPU) are covered through the dispatcher in tests/ssm/test_algorithms.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.blocks import ScanBlocks
from pallas_kernels.selective_scan import VARIANTS, selective_scan
from tests.ssm.cases import (
    OPTION_COMBOS,
    OPTION_IDS,
    TOLERANCE,
    SharedSweeps,
    assert_close,
    assert_matches,
    check_batch_sharded,
    random_inputs,
    scan_args,
    sweep_against_reference,
    value_and_grads,
)
from vmp_jax.ssm import selective_scan as dispatch

HAS_GPU = any(d.platform == "gpu" for d in jax.devices())
MODES = [
    "interpret",
    pytest.param("gpu", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_GPU, reason="no GPU")]),
]
# Split into segments of whole chunks (a GPU's default), so that the summary kernels, the scan
# over segments and the kernels' entering states are checked in every test that uses it.
SMALL = ScanBlocks(chunk_size=4, channel_block=2, num_warps=1, segments=2)


def _compare(x, dtype, mode, *, reverse=True, mask_diagonal=True, residual=True, **kernel_args):
    """Kernel vs reference in value and gradient; VMP's backward-scan options by default,
    kernel_args (variant, blocks) with SMALL blocks by default."""
    args = scan_args(x, dtype)
    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=x.u.shape), jnp.float32)
    options = {"reverse": reverse, "mask_diagonal": mask_diagonal, "residual": residual}
    kernel_args = {"blocks": SMALL, **kernel_args}

    def kernel(**a):
        return selective_scan(**a, **options, **kernel_args, interpret=mode == "interpret")

    got = value_and_grads(kernel, args, cotangent)
    want = value_and_grads(dispatch, args, cotangent, algorithm="reference", **options)
    assert_matches(args, got, want, "pallas")


# The 8 option combinations of a mode and variant run as one program; each test checks its part.
SWEEPS = SharedSweeps()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("reverse", "mask", "residual"), OPTION_COMBOS, ids=OPTION_IDS)
def test_matches_reference_float32(request, mode, variant, reverse, mask, residual, seed):
    def sweeps(seed):
        # L = 11: two chunks of 4 and a partial one; D = 5 pads to 6, n = 3 pads to 4.
        args = scan_args(random_inputs(seed, 2, 11, 5, 3), jnp.float32)
        cotangent = jnp.asarray(np.random.default_rng(seed).normal(size=(2, 11, 5)), jnp.float32)
        kernel_args = {"blocks": SMALL, "variant": variant, "interpret": mode == "interpret"}
        return args, *sweep_against_reference(selective_scan, args, cotangent, **kernel_args)

    args, got, want = SWEEPS.get(request, seed, (mode, variant), sweeps)
    name = OPTION_IDS[OPTION_COMBOS.index((reverse, mask, residual))]
    assert_matches(args, got[name], want[name], f"pallas {name}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("with_D", [False, True])
@pytest.mark.parametrize("with_z", [False, True])
def test_optional_skip_and_gate(mode, variant, with_D, with_z, seed):
    x = random_inputs(seed, 1, 7, 4, 2, with_D=with_D, with_z=with_z)
    _compare(x, jnp.float32, mode, variant=variant)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_inference_forward_matches_reference(mode, variant, seed):
    """The forward alone (vmp eval, vmp predict) is a kernel of its own that saves no states
    and walks chunks of INFERENCE_UNROLL x q tokens: at L = 19, three such chunks of 8 (the
    last partial), split into segments."""
    args = scan_args(random_inputs(seed, 2, 19, 5, 3), jnp.float32)
    options = {"reverse": True, "mask_diagonal": True, "residual": True}
    kernel_args = {"blocks": SMALL, "variant": variant, "interpret": mode == "interpret"}
    got = jax.jit(lambda a: selective_scan(**a, **options, **kernel_args))(args)
    want = dispatch(**args, algorithm="reference", **options)
    assert_close(got, want, TOLERANCE["float32"], "pallas inference y")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("residual", [False, True])
def test_matches_reference_bfloat16(mode, variant, residual, seed):
    x = random_inputs(seed, 2, 13, 4, 4)
    _compare(x, jnp.bfloat16, mode, residual=residual, variant=variant)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "blocks",
    [
        ScanBlocks(1, 1, 1),
        ScanBlocks(3, 8, 2),
        ScanBlocks(16, 4, 4),
        ScanBlocks(1, 4, 1, segments=9),  # one token per segment
        ScanBlocks(2, 4, 1, segments=3),  # segments of 2, 2 and 1 chunks
    ],
    ids=str,
)
def test_block_sizes_do_not_change_the_result(mode, blocks, seed):
    x = random_inputs(seed, 1, 9, 6, 2)
    _compare(
        x,
        jnp.float32,
        mode,
        reverse=False,
        mask_diagonal=True,
        residual=True,
        variant="sequential",
        blocks=blocks,
    )


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_kernels_lower_to_triton_for_cuda(variant, dtype):
    """Cross-lowering for CUDA on any machine: every op in the kernels has a Triton lowering
    rule, for forward and backward, at the VMP-S scan shape."""
    b, l, d, n = 2, 1569, 768, 16
    u, B = jnp.zeros((b, l, d), dtype), jnp.zeros((b, l, n), dtype)
    A, D = -jnp.ones((d, n)), jnp.ones((d,))
    options = {"reverse": True, "mask_diagonal": True, "residual": True, "variant": variant}
    options["interpret"] = False  # the native kernels, though this machine may have no GPU

    def kernels(sm_count):
        def loss(*a):
            return jnp.sum(selective_scan(*a, **options, sm_count=sm_count).astype(jnp.float32))

        grad = jax.jit(jax.grad(loss, argnums=tuple(range(7))))
        text = grad.trace(u, u, A, B, B, D, u).lower(lowering_platforms=("cuda",)).as_text()
        return text.count("__gpu$xla.gpu.triton")

    assert kernels(None) == 2  # the forward and the backward kernel (no GPU: no split)
    assert kernels(132) == 4  # split for a GPU's SMs: each pass adds its summary kernel


def test_bad_arguments_are_named():
    x = scan_args(random_inputs(0, 1, 4, 2, 2), jnp.float32)
    with pytest.raises(ValueError, match="channel_block must be a power of two.*got 6"):
        selective_scan(**x, blocks=ScanBlocks(channel_block=6), interpret=True)
    with pytest.raises(ValueError, match="unknown variant 'blocked'"):
        selective_scan(**x, variant="blocked", interpret=True)
    with jax.enable_x64(True):
        x64 = scan_args(random_inputs(0, 1, 4, 2, 2), jnp.float64)
        with pytest.raises(ValueError, match="u has dtype float64.*float32, bfloat16"):
            selective_scan(**x64, interpret=True)


def test_batch_sharded_kernels_match_in_value_and_gradient(seed):
    """Under `batch_sharded(mesh)` each of the 8 devices runs the kernels on its shard of the
    batch (shard_map); the replicated A and D get their cotangents summed over the devices."""
    check_batch_sharded("pallas", seed)
