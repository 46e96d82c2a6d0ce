"""`vmp ablate --suite diagnostics` end to end at smoke size (2 steps a run, one seed, one
layer): the tables with McNemar, the accuracy plots and the similarity panels; a rerun reuses
the runs."""

import os

from vmp_jax import cli
from vmp_jax.train import diagnostics

SMOKE = [
    "--seeds", "1",
    "--variants", "videomamba", "vmp",
    "--knobs", "decay=2", "contradiction=0",
    "--videos-per-class", "4",
    "--config.optim.epochs=2",  # 3 train videos a class, batch 8: one step an epoch
    "--config.data.batch_size=8",
    "--config.eval.batch_size=8",  # one video a device
    "--config.model.depth=1",  # the train step's compile (most of the run) is half depth 2's
]  # fmt: skip


def test_suite_smoke_run_writes_tables_and_plots(tmp_path, capsys, monkeypatch):
    workdir = str(tmp_path / "suite")
    assert cli.main(["ablate", "--suite", "diagnostics", "--workdir", workdir, *SMOKE]) == 0
    out = capsys.readouterr().out
    assert "diagnostic suite: 4 runs in" in out
    assert "| variant | frames 2 |" in out and "| variant | frames between 0 |" in out
    assert out.count("McNemar, vmp vs videomamba, seeds pooled") == 2
    rows = [line for line in out.splitlines() if line.startswith("| vmp |")]
    assert len(rows) == 2 and all("±" in row for row in rows)
    for name in ("decay", "contradiction"):
        for kind in ("accuracy", "similarity"):
            path = os.path.join(workdir, f"{name}_{kind}.png")
            assert os.path.getsize(path) > 10_000, path
    with open(os.path.join(workdir, "report.md")) as f:
        report = f.read()
    assert report.startswith("diagnostic suite: 4 runs") and report.count("| vmp |") == 2
    predictions = os.path.join(
        workdir, "runs", "decay_2", "seed0", "vmp", "eval", "predictions.csv"
    )
    assert os.path.exists(predictions)
    before = os.path.getmtime(predictions)
    # the rerun checks reuse; its similarity panels (checked above) would reload both models
    monkeypatch.setattr(diagnostics, "plot_similarity", lambda *args: "(not redrawn)")
    assert cli.main(["ablate", "--suite", "diagnostics", "--workdir", workdir, *SMOKE]) == 0
    assert os.path.getmtime(predictions) == before  # reused, not retrained
    assert "diagnostic suite: 4 runs in" in capsys.readouterr().out
