"""The variants `vmp ablate` trains (the paper's Table 5), by name: VideoMamba, VMP without the
residual SSM, VMP without the masked diagonal, and VMP. Apart from `ablate.py`, which trains
them, so that `vmp ablate --help` lists them without importing jax."""

# name -> the model switches (bwd_mask_diagonal, residual_ssm, bwd_shares_delta)
VARIANTS = {
    "videomamba": (False, False, False),
    "vmp_no_residual": (True, False, True),
    "vmp_no_mask": (False, True, True),
    "vmp": (True, True, True),
}
