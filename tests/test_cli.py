"""The `vmp` command line: `bench-scan` prints its table; bad input exits 2 with a named error."""

import re

import pytest

from vmp_jax import cli
from vmp_jax.bench import scan


def test_bench_scan_prints_every_algorithm_with_ratios(capsys):
    code = cli.main(
        ["bench-scan", "--lengths", "9", "20", "--dim", "4", "--state", "2", "--repeats", "1"]
    )
    out = capsys.readouterr().out
    assert code == 0
    rows = [
        line for line in out.splitlines() if re.match(r"\| (sequential|associ|chunked|auto)", line)
    ]
    assert len(rows) == 2 * len(scan.DEFAULT_ALGORITHMS)
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] in ("9", "20")
        assert float(cells[2]) > 0 and float(cells[4]) > 0 and float(cells[6]) >= 0
        if cells[0] == "sequential":
            assert cells[3] == cells[5] == cells[7] == "1.00"
        else:
            assert float(cells[3]) > 0 and float(cells[5]) > 0
    assert "auto (" in out


def test_bench_scan_skips_runs_over_the_memory_limit(capsys):
    argv = ["bench-scan", "--lengths", "40", "--dim", "4", "--state", "2", "--repeats", "1"]
    assert (
        cli.main([*argv, "--algorithms", "sequential", "reference", "--max-temp-gib", "1e-9"]) == 0
    )
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    skipped = [line for line in table if re.search(r"\| - \| - \| - \| - \|.*not run: needs", line)]
    assert len(skipped) == 2


def test_bench_scan_rejects_an_unknown_algorithm(capsys):
    assert cli.main(["bench-scan", "--algorithms", "pallas"]) == 2
    assert "unknown algorithm 'pallas'" in capsys.readouterr().err


def test_unknown_subcommand_is_an_argparse_error():
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["no-such-command"])
    assert exit_info.value.code == 2
