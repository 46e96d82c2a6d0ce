"""Occupancy and the parsing of ptxas' report and XLA's thunk dump, on known figures."""

import pytest

from vmp_jax.compile.gpu import occupancy, ptxas, targets

H100, A100 = targets.get("h100"), targets.get("a100")


@pytest.mark.parametrize(
    ("target", "registers", "threads", "grid", "blocks", "occ", "waves"),
    [
        # The figures for the kernels before the restructure (H100, 128 threads, 384).
        (H100, 164, 128, 384, 3, 0.1875, 384 / 396),
        (H100, 255, 128, 384, 2, 0.125, 384 / 264),
        (H100, 125, 128, 384, 4, 0.25, 384 / 528),
        (A100, 128, 128, 384, 4, 0.25, 384 / 432),
        (A100, 32, 128, 1536, 16, 1.0, 1536 / 1728),  # 2048 threads: the thread limit too
    ],
)
def test_register_limited_occupancy(target, registers, threads, grid, blocks, occ, waves):
    o = occupancy.occupancy(target, registers=registers, shared_bytes=0, threads=threads, grid=grid)
    assert (o.blocks_per_sm, o.occupancy) == (blocks, occ)
    assert o.waves == pytest.approx(waves)


def test_other_limits_and_the_last_wave():
    smem = occupancy.occupancy(H100, registers=32, shared_bytes=100_000, threads=128, grid=132)
    assert (smem.blocks_per_sm, smem.limited_by) == (2, "shared memory")
    tiny = occupancy.occupancy(H100, registers=16, shared_bytes=0, threads=32, grid=10_000)
    assert (tiny.blocks_per_sm, tiny.limited_by) == (32, "blocks")
    o = occupancy.occupancy(H100, registers=125, shared_bytes=0, threads=128, grid=1000)
    assert o.waves == pytest.approx(1000 / 528) and o.last_wave_fill == pytest.approx(472 / 528)


def test_target_configs_name_the_device():
    text = H100.config_text()
    assert "core_count: 132" in text and 'device_description_str: "NVIDIA H100 80GB HBM3"' in text
    assert H100.arch == "sm_90a" and A100.arch == "sm_80"
    with pytest.raises(ValueError, match="unknown GPU target 'v100'; known targets: h100, a100"):
        targets.get("v100")


PTXAS_LOG = """\
I1125 subprocess_compilation.cc:201] Using /x/bin/ptxas with version 12.9.86
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'selective_scan_fwd' for 'sm_90a'
ptxas info    : Function properties for selective_scan_fwd
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers
ptxas info    : Compiling entry function 'loop_add_fusion' for 'sm_90a'
ptxas info    : Function properties for loop_add_fusion
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers, 128 bytes smem
ptxas info    : Compiling entry function 'selective_scan_bwd' for 'sm_90a'
ptxas info    : Function properties for selective_scan_bwd
    672 bytes stack frame, 688 bytes spill stores, 680 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 672 bytes cumulative stack size
"""

THUNKS = """\
002: kCustomKernel [source       | next=003 (1)] selective_scan_fwd grid: [16, 24, 1] \
threads: [128, 1, 1]  shared_memory: 64 bytes
003: kCustomKernel [prev=002 (1) | next=004 (1)] selective_scan_bwd grid: [16, 24, 1] \
threads: [128, 1, 1]  shared_memory: 256 bytes
"""


def test_ptxas_report_and_thunk_dump_are_read(tmp_path):
    reports = ptxas.parse_ptxas(PTXAS_LOG)
    assert reports["selective_scan_fwd"].registers == 64
    bwd = reports["selective_scan_bwd"]
    assert (bwd.registers, bwd.spill_store_bytes, bwd.spill_load_bytes) == (255, 688, 680)
    assert reports["loop_add_fusion"].static_shared_bytes == 128
    assert ptxas.ptxas_version(PTXAS_LOG) == "/x/bin/ptxas 12.9.86"
    (tmp_path / "module_0001.jit_f.thunk_sequence.txt").write_text(THUNKS)
    launches = ptxas.parse_launches(str(tmp_path))
    assert launches["selective_scan_bwd"] == ((16, 24, 1), (128, 1, 1), 256)


def test_table_rows_print_small_steps_in_their_first_digit():
    from vmp_jax.compile import table

    assert table._gib(30 * 2**20) == "0.03" and table._gib(int(38.44 * 2**30)) == "38.4"


def test_the_largest_batch_takes_one_compile_per_further_place():
    """The first place of a config and target is compiled at 16 and 32 clips; a further place
    (more hosts, more GPUs) only at 16, taking the first place's memory per clip and its own
    fixed part; the largest batch is where that line crosses the usable memory."""
    import types

    from vmp_jax.compile import table

    fixed, per_clip, usable = {"one": 6 * 2**30, "four": 4 * 2**30}, 2**29, 30 * 2**30
    calls = []

    def compile_train(config, overrides, target, devices, batch):
        calls.append((devices, batch))
        used = None if devices == "broken" else fixed[devices] + per_clip * batch
        return types.SimpleNamespace(
            per_device_bytes=used, per_device_batch=batch, usable_bytes=usable,
            fits=used is not None and used <= usable, algorithm="pallas",
        )  # fmt: skip

    found = list(table.rows(["c.py"], ["v5e"], ["one", "four"], compile_train=compile_train))
    assert calls == [("one", 16), ("one", 32), ("four", 16)]
    assert [r.largest_batch for r in found] == [48, 52]  # (30 - 6) / 0.5 and (30 - 4) / 0.5
    calls.clear()
    broken = table.rows(["c.py"], ["v5e"], ["broken", "four"], compile_train=compile_train)
    assert [r.largest_batch for r in broken] == [0, 52]  # the second place measures its own
    assert calls == [("broken", 16), ("four", 16), ("four", 32)]


def test_the_table_takes_gpus_and_tpus_each_under_its_header():
    import types

    from vmp_jax.compile import table

    calls, lines = [], []

    def compile_train(config, overrides, target, place, batch):
        calls.append((target, place))
        return types.SimpleNamespace(
            per_device_bytes=2**30, per_device_batch=batch, usable_bytes=8 * 2**30, fits=True,
            algorithm="pallas",
        )  # fmt: skip

    found = table.print_table(
        ["c.py"], ["v5e", "h100"], [1, 8], 4, compile_train=compile_train, estimate=False,
        echo=lines.append,
    )  # fmt: skip
    assert calls == [("h100", 1), ("h100", 8), ("v5e", "v5e:2x2"), ("v5e", "v5e:4x4")]
    assert [r.devices for r in found] == [1, 8, "v5e:2x2", "v5e:4x4"]
    assert lines[0] == table.HEADER and lines[3] == table.TPU_HEADER
    assert lines[4] == "| c | v5e | v5e:2x2 | pallas | 1.0 | yes | - |"
