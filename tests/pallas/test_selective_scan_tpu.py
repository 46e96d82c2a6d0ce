"""The Pallas TPU kernels equal `reference` in value and gradient, on this CPU.

Through the one way in, `selective_scan(algorithm="pallas")` inside `compiling_for("tpu")`,
the kernels run in Pallas' interpreter (lowered for a TPU they would be Mosaic's: tests/
compile/test_tpu.py); one runs them in the TPU interpreter with race detection. Lengths that leave
a partial chunk and widths that do not fill a channel block (130 channels in blocks of 128:
a second, padded block) are in every sweep.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.pallas.mosaic.interpret import interpret_pallas_call as tpu_interpreter

from pallas_kernels import selective_scan_tpu
from pallas_kernels.blocks import ScanBlocks
from pallas_kernels.scan_chunk import VARIANTS
from tests.ssm.cases import (
    OPTION_COMBOS,
    OPTION_IDS,
    SharedSweeps,
    assert_matches,
    check_batch_sharded,
    random_inputs,
    scan_args,
    sweep_against_reference,
    value_and_grads,
)
from vmp_jax.ssm import compiling_for, selective_scan

SMALL = ScanBlocks(chunk_size=8)  # the default lanes (128 channels)


def tpu_pallas(**kwargs):
    """`selective_scan` with algorithm="pallas", traced for a TPU."""
    with compiling_for("tpu"):
        return selective_scan(**kwargs, algorithm="pallas")


def _compare(x, dtype, *, reverse=True, mask_diagonal=True, residual=True, **kernel_args):
    args = scan_args(x, dtype)
    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=x.u.shape), jnp.float32)
    options = {"reverse": reverse, "mask_diagonal": mask_diagonal, "residual": residual}
    got = value_and_grads(tpu_pallas, args, cotangent, **options, **kernel_args)
    want = value_and_grads(selective_scan, args, cotangent, algorithm="reference", **options)
    assert_matches(args, got, want, "pallas (TPU)")


SWEEPS = SharedSweeps()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("reverse", "mask", "residual"), OPTION_COMBOS, ids=OPTION_IDS)
def test_matches_reference_float32(request, variant, reverse, mask, residual, seed):
    def sweeps(seed):
        # L = 19: two chunks of 8 and a partial one; D = 130: a full and a padded block.
        args = scan_args(random_inputs(seed, 2, 19, 130, 3), jnp.float32)
        cotangent = jnp.asarray(np.random.default_rng(seed).normal(size=(2, 19, 130)), jnp.float32)
        kernel_args = {"blocks": SMALL, "variant": variant}
        return args, *sweep_against_reference(tpu_pallas, args, cotangent, **kernel_args)

    args, got, want = SWEEPS.get(request, seed, (variant,), sweeps)
    name = OPTION_IDS[OPTION_COMBOS.index((reverse, mask, residual))]
    assert_matches(args, got[name], want[name], f"pallas (TPU) {name}")


@pytest.mark.parametrize("with_D", [False, True])
@pytest.mark.parametrize("with_z", [False, True])
def test_optional_skip_and_gate(with_D, with_z, seed):
    x = random_inputs(seed, 1, 11, 6, 2, with_D=with_D, with_z=with_z)
    _compare(x, jnp.float32, blocks=SMALL, variant="associative")


@pytest.mark.parametrize("residual", [False, True])
def test_matches_reference_bfloat16(residual, seed):
    """16-bit inputs (in chunks of 16: one (16, 128) bf16 tile); the state stays float32."""
    x = random_inputs(seed, 2, 21, 5, 4)
    _compare(x, jnp.bfloat16, residual=residual, blocks=ScanBlocks(chunk_size=16))


def test_tpu_interpreter_finds_no_race_and_matches(seed):
    """The TPU interpreter (TPU memory semantics, out-of-bounds reads caught) with its race
    detector, forward and backward, VMP's options with the gate."""
    x = random_inputs(seed, 2, 13, 130, 2)
    args = scan_args(x, jnp.float32)
    cotangent = jnp.asarray(np.random.default_rng(seed).normal(size=x.u.shape), jnp.float32)
    options = {"reverse": True, "mask_diagonal": True, "residual": True}

    def kernels(**a):
        return selective_scan_tpu.selective_scan(
            **a, **options, blocks=SMALL, interpret=True, detect_races=True
        )

    got = value_and_grads(kernels, args, cotangent)
    jax.block_until_ready(got)
    assert tpu_interpreter.races is not None and not tpu_interpreter.races.races_found
    want = value_and_grads(selective_scan, args, cotangent, algorithm="reference", **options)
    assert_matches(args, got, want, "pallas (TPU interpreter)")


def test_batch_sharded_kernels_match_in_value_and_gradient(seed):
    """Mosaic kernels are not partitioned automatically: under `batch_sharded` each of the 8
    devices runs them on its shard of the batch (shard_map), as on the GPU."""
    with compiling_for("tpu"):
        text = check_batch_sharded("pallas", seed)
    assert "shard_map" in text or "sdy.manual_computation" in text


def test_a_tiling_the_tpu_cannot_take_is_named():
    x = scan_args(random_inputs(0, 1, 16, 2, 2), jnp.float32)
    with pytest.raises(ValueError, match="tpu_channel_block must be a multiple of 128.*got 96"):
        tpu_pallas(**x, blocks=ScanBlocks(tpu_channel_block=96))
    with pytest.raises(ValueError, match="chunk_size must be a multiple of 8.*got 12"):
        tpu_pallas(**x, blocks=ScanBlocks(chunk_size=12))
    # A channel block that is no power of two is the GPU's restriction, not the TPU's.
    tpu_pallas(**x, blocks=ScanBlocks(channel_block=6))
    with jax.enable_x64(True):
        x64 = scan_args(random_inputs(0, 1, 16, 2, 2), jnp.float64)
        with pytest.raises(ValueError, match="u has dtype float64.*float32, bfloat16"):
            selective_scan_tpu.selective_scan(**x64)
