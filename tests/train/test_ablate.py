"""`vmp ablate`: the four Table 5 variants differ exactly in the three VMP switches, and the
command trains, evaluates and tabulates them."""

import os

import pytest

from tests.train.test_train_cli import DEMO, _args
from vmp_jax import cli
from vmp_jax.experiment import load_config
from vmp_jax.train import ablate


def test_variants_set_the_three_switches():
    config = load_config(DEMO)
    switches = ("bwd_mask_diagonal", "residual_ssm", "bwd_shares_delta")
    for name, expected in ablate.VARIANTS.items():
        model = ablate.variant_config(config, name).model
        assert tuple(model[k] for k in switches) == expected, name
    assert config.model.residual_ssm  # the original is left alone


@pytest.mark.parametrize("variants", [["videomamba", "vmp"]])
def test_ablate_trains_and_tabulates(motion_dataset, tmp_path, capsys, variants):
    argv = _args(motion_dataset, str(tmp_path))[:-2]  # without --workdir
    argv = [a.replace("optim.epochs=4", "optim.epochs=1") for a in argv]
    argv.append("--config.optim.ema_decay=0.9")  # the run keeps EMA weights: those are tested
    code = cli.main(["ablate", *argv, "--workdir", str(tmp_path), "--variants", *variants])
    assert code == 0
    table = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ")]
    assert [r.split("|")[1].strip() for r in table[1:]] == variants
    params = [int(r.split("|")[2].replace(",", "")) for r in table[1:]]
    assert params[0] > params[1]  # VideoMamba's dt_proj_b and fuller x_proj_b
    assert [r.split("|")[3].strip() for r in table[1:]] == ["EMA"] * len(variants)
    for name in variants:
        assert os.path.isfile(tmp_path / name / "eval" / "predictions.csv")
