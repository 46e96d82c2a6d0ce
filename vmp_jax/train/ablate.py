"""`vmp ablate`: the paper's Table 5 on one dataset. VideoMamba, VMP without the residual SSM,
VMP without the masked diagonal, and VMP, each trained and evaluated with the same config, data
and seed; one table of their multi-view results, of the EMA weights when the config keeps them.
Each variant trains in WORKDIR/<variant> and resumes there like `vmp train`."""

from vmp_jax import storage
from vmp_jax.data import labels
from vmp_jax.evaluate import multiview
from vmp_jax.experiment import apply_override, model_config
from vmp_jax.multihost import join
from vmp_jax.train import loop
from vmp_jax.train.variants import VARIANTS


def variant_config(config, name: str):
    """A copy of `config` with `name`'s switches."""
    config = config.copy_and_resolve_references()
    mask, residual, shares = VARIANTS[name]
    for key, value in (
        ("bwd_mask_diagonal", mask),
        ("residual_ssm", residual),
        ("bwd_shares_delta", shares),
    ):
        apply_override(config, f"model.{key}", str(value))
    return config


def run(config, workdir: str, variants=tuple(VARIANTS), echo=print) -> list[dict]:
    rows, primary = [], join.is_primary()  # process 0 alone reports and writes
    echo = echo if primary else loop.silent
    for name in variants:
        cfg = variant_config(config, name)
        out = storage.join(workdir, name)
        echo(f"== {name} ==")
        loop.train(cfg, out, echo=echo)
        predictions, _, _, ema = multiview.evaluate_checkpoint(cfg, out)
        if primary:
            multiview.write_report(predictions, storage.join(out, "eval"), labels.class_names(cfg))
        rows.append(
            {
                "variant": name,
                **multiview.summary(predictions),
                "params": _params(cfg),
                "weights": "EMA" if ema else "raw",
            }
        )
    echo(format_table(rows))
    return rows


def _params(config) -> int:
    from flax import nnx

    from vmp_jax.models.videomamba import VideoMamba, count_params

    cfg = model_config(config)
    return count_params(nnx.eval_shape(lambda: VideoMamba(cfg, rngs=nnx.Rngs(0))))


def format_table(rows: list[dict]) -> str:
    lines = [
        "| variant | params | weights | top-1 | top-5 | videos |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['params']:,} | {r['weights']} | {r['top1']:.4f} | "
            f"{r['top5']:.4f} | {r['videos']} |"
        )
    return "\n".join(lines)
