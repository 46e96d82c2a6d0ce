"""The `vmp` command line: `bench-scan` prints its table; bad input exits 2 with a named error."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import pytest

from vmp_jax import cli
from vmp_jax.bench import scan
from vmp_jax.experiment import load_config, model_config
from vmp_jax.models import flops
from vmp_jax.ssm import api, sequential


def _table(out: str) -> list[list[str]]:
    """The cells of the table's data rows."""
    lines = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]


def test_bench_scan_prints_every_algorithm_with_ratios(capsys):
    code = cli.main(
        ["bench-scan", "--lengths", "9", "20", "--dim", "4", "--state", "2", "--repeats", "1"]
    )
    out = capsys.readouterr().out
    assert code == 0
    rows = _table(out)
    assert len(rows) == 2 * len(scan.default_algorithms("cpu"))
    for length in ("9", "20"):
        at = [r for r in rows if r[1] == length]
        assert {r[0].split(" ")[0] for r in at} == {*scan.XLA_ALGORITHMS, "cpu", "auto"}
        assert f"exp floor L={length}: " in out
        xla = [r for r in at if r[0] in scan.XLA_ALGORITHMS]
        # Speed-ups over the best XLA algorithm: the best one reads 1, none more; printed to 3
        # significant figures, a slow round cannot print a positive ratio as 0.
        for column in (3, 7):
            speedups = [float(r[column]) for r in xla]
            assert max(speedups) == 1.0 and min(speedups) > 0
        for r in at:
            assert float(r[2]) > 0 and float(r[6]) > 0 and float(r[8]) >= 0
            assert float(r[4]) > 0  # the forward over the exp floor
            assert 0 < float(r[5]) < 1000  # % of the bandwidth floor
        assert [r[9] for r in at if r[0] == "sequential"] == ["1"]
    assert "auto (cpu)" in out and "copy bandwidth" in out


def test_bench_scan_sets_every_forward_against_the_exp_floor_of_its_run():
    lines = []
    rows = scan.run(
        lengths=(12,), algorithms=("sequential", "cpu"), dim=4, state=2, repeats=2,
        echo=lines.append,
    )  # fmt: skip
    assert len({r.exp_ms for r in rows}) == 1 and rows[0].exp_ms > 0  # one floor, timed once
    table = _table(lines[-1])
    for row, printed in zip(rows, table, strict=True):
        assert printed[0] == row.algorithm and float(printed[4]) == float(
            f"{row.fwd_ms / row.exp_ms:.3g}"
        )


def test_bench_scan_times_the_pallas_variants_by_name(capsys):
    argv = ["bench-scan", "--lengths", "5", "--dim", "2", "--state", "2", "--repeats", "1"]
    assert cli.main([*argv, "--algorithms", "sequential", *scan.PALLAS_VARIANTS]) == 0
    rows = _table(capsys.readouterr().out)
    assert [r[0] for r in rows] == ["sequential", *scan.PALLAS_VARIANTS]
    assert all(float(r[2]) > 0 and float(r[6]) > 0 for r in rows)


def test_bench_scan_tiles_chunked_and_pallas_with_the_given_blocks(capsys):
    argv = ["bench-scan", "--lengths", "9", "--dim", "4", "--state", "2", "--repeats", "1"]
    argv += ["--algorithms", "chunked", "pallas:associative", "pallas:sequential:2"]
    assert cli.main([*argv, "--blocks", "4,2,1,2"]) == 0
    out = capsys.readouterr().out
    assert "ScanBlocks(chunk_size=4, channel_block=2, num_warps=1, subchunk_size=2, " in out
    rows = ["chunked", "pallas:associative", "pallas:sequential:2"]
    assert [r[0] for r in _table(out)] == rows
    assert cli.main([*argv, "--blocks", "4,6,1"]) == 2
    assert "channel_block must be a power of two for the Pallas kernels" in capsys.readouterr().err
    assert cli.main([*argv[:-4], "--algorithms", "pallas:sequential:0"]) == 2
    assert "unknown scan 'pallas:sequential:0'" in capsys.readouterr().err


def test_forward_bytes_counts_inputs_read_and_output_written():
    b, l, d, n = 2, 7, 3, 4
    args = scan._inputs(b, l, d, n, jnp.float32)
    assert scan.forward_bytes(args) == 4 * (4 * b * l * d + 2 * b * l * n)


def test_bench_scan_skips_runs_over_the_memory_limit(capsys):
    argv = ["bench-scan", "--lengths", "40", "--dim", "4", "--state", "2", "--repeats", "1"]
    assert (
        cli.main([*argv, "--algorithms", "sequential", "reference", "--max-temp-gib", "1e-9"]) == 0
    )
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    skipped = [line for line in table if re.search(r"\| - \| - \| - \| - \|.*not run: needs", line)]
    assert len(skipped) == 2


def test_bench_scan_rejects_an_unknown_algorithm(capsys):
    assert cli.main(["bench-scan", "--algorithms", "mamba"]) == 2
    assert "unknown algorithm 'mamba'" in capsys.readouterr().err


def test_unknown_subcommand_is_an_argparse_error():
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["no-such-command"])
    assert exit_info.value.code == 2


def test_params_prints_the_exact_count_and_the_papers(capsys):
    assert cli.main(["params", "--config", "configs/k400_vm_ti_f8.py"]) == 0
    out = capsys.readouterr().out
    assert "VideoMamba-Ti" in out and "**7,033,744** (7.03M)" in out and "paper: 7M" in out
    groups = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    counts = [int(re.sub(r"\D", "", line.split("|")[2].split("(")[0])) for line in groups[1:]]
    assert sum(counts[:-1]) == counts[-1] == 7_033_744


def test_flops_prints_the_counts(capsys):
    argv = ["flops", "--config", "configs/demo.py", "--config.model.depth=1"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert float(re.search(r"([\d.]+) GFLOPs \(XLA", out).group(1)) > 0 and "GMACs" in out


def _unrolled_sequential(u, delta, A, B, C, *, mask_diagonal, residual):
    """`sequential` with its loop unrolled in Python: XLA sees every step."""
    zeros = jnp.zeros((u.shape[0], u.shape[2], A.shape[1]), u.dtype)
    carry, ys = (zeros, zeros) if residual else (zeros,), []
    for t in range(u.shape[1]):
        x = (u[:, t], delta[:, t], B[:, t], C[:, t])
        carry, y = sequential.step(carry, x, A, mask_diagonal=mask_diagonal, residual=residual)
        ys.append(y)
    return jnp.stack(ys, axis=1)


def test_flops_counts_every_scan_step(monkeypatch):
    """XLA counts a loop body once, so `vmp flops` adds each scan's other L - 1 steps. From 1 to
    2 frames (5 to 9 tokens) its count grows exactly as XLA's count of the same model with every
    scan unrolled. Both are counted before XLA's optimisations: fusing an unrolled scan
    duplicates its steps, and the compiled count of that duplicated work grows as L^2."""
    configs = [
        model_config(load_config("configs/demo.py", ["model.depth=1", f"model.num_frames={t}"]))
        for t in (1, 2)
    ]
    counted = [flops.forward_flops(c, compiled=False) for c in configs]
    monkeypatch.setitem(api.ALGORITHMS, "sequential", _unrolled_sequential)
    jax.clear_caches()  # the scan's programs are cached by the algorithm's name
    unrolled = [
        flops.model_flops(c, c.num_frames, c.img_size, compiled=False)
        for c in (dataclasses.replace(c, scan_algorithm="sequential") for c in configs)
    ]
    jax.clear_caches()
    assert counted[1] - counted[0] == unrolled[1] - unrolled[0] > 0


def test_a_bad_config_key_or_value_is_named(capsys):
    assert cli.main(["params", "--config", "configs/demo.py", "--config.model.nope=1"]) == 2
    assert "config key 'model.nope' does not exist" in capsys.readouterr().err
    assert cli.main(["params", "--config", "configs/demo.py", "--config.optim.epochs=x"]) == 2
    assert "config key 'optim.epochs': 'x' is a str; expected a int" in capsys.readouterr().err
    assert cli.main(["params", "--config", "configs/missing.py"]) == 2
    assert "config file 'configs/missing.py' does not exist" in capsys.readouterr().err
