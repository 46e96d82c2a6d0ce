"""Test set-up: 8 fake CPU devices (for sharding tests) before jax starts, a compilation cache
for the session, hypothesis profiles, and the `seed` fixture: fresh random inputs every run,
each failure reproducible."""

import atexit
import collections
import os
import shutil
import sys
import tempfile

# XLA's CPU backend at LLVM -O0: most of the suite's time is XLA compiling small programs, and
# at -O0 LLVM compiles them in about half the time while they run about as fast at the tests'
# shapes. XLA's own passes (fusion, buffer assignment, cost analysis) do not depend on it; the
# float results may differ in their last bits (LLVM fuses multiply-adds only when it
# optimises), which every tolerance here covers, and a test comparing two runs bit for bit
# runs both the same way. Users run at XLA's default. The TPU compile worker, which would read
# it too, is started without it (tests/compile/test_tpu.py); a test whose program runs long
# compiles it with `compiler_options=XLA_DEFAULT_COMPILE`.
_CPU_OPT_LEVEL = "xla_backend_optimization_level"
FAST_CPU_COMPILE = f"--{_CPU_OPT_LEVEL}=0"
XLA_DEFAULT_COMPILE = {_CPU_OPT_LEVEL: 2}  # XLA's default level
os.environ["XLA_FLAGS"] = " ".join(
    dict.fromkeys(
        [
            *os.environ.get("XLA_FLAGS", "").split(),
            "--xla_force_host_platform_device_count=8",
            FAST_CPU_COMPILE,
        ]
    )
)

# Nothing the tests run reaches beyond 127.0.0.0/8: a connection elsewhere raises, in this
# process and (through sitecustomize on PYTHONPATH) in every Python process the tests start;
# Google's client libraries find no metadata server (a closed port on 127.0.0.1) and look for
# none (`tests/storage` aims them at a local emulator).
_NETGUARD = os.path.join(os.path.dirname(__file__), "netguard")
sys.path.insert(0, _NETGUARD)
import loopback_only  # noqa: E402

loopback_only.install()
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_NETGUARD, os.environ.get("PYTHONPATH")) if p
)
if "GCE_METADATA_HOST" not in os.environ:
    from vmp_devtools.gcs_emulator import free_port  # noqa: E402 - stdlib only

    _closed = f"127.0.0.1:{free_port()}"
    os.environ.update(
        NO_GCE_CHECK="true",
        GCE_METADATA_HOST=_closed,
        GCE_METADATA_IP=_closed,
        GCE_METADATA_ROOT=_closed,
    )

# Programs compiled once per session and shared: the tests train the same tiny runs in several
# processes (`vmp train` in a subprocess, the same run restarted, 2 processes against 1), and
# every run builds its jitted steps anew. The first process to import this file (pytest's
# main process) makes a fresh directory, which the xdist workers and every process the tests
# start inherit through the environment, and removes it at exit: nothing carries over from one
# session to the next. A cache the caller set is used as it is.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _session_cache = tempfile.mkdtemp(prefix="vmp-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _session_cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    atexit.register(shutil.rmtree, _session_cache, ignore_errors=True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Each example compiles new programs: no deadline, few examples, fresh random draws every run;
# a failure prints the blob that replays it (@reproduce_failure).
settings.register_profile(
    "default",
    deadline=None,
    max_examples=6,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

SEED_ENV = "VMP_TEST_SEED"


@pytest.fixture
def seed(request) -> int:
    """A fresh random seed for this test's inputs, or $VMP_TEST_SEED's: a failing test's
    report names the seed it drew, and `VMP_TEST_SEED=<seed> pytest <test id>` replays it."""
    value = int(os.environ.get(SEED_ENV) or np.random.SeedSequence().entropy % 2**31)
    request.node.vmp_seed = value
    return value


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    drawn = getattr(item, "vmp_seed", None)
    if report.failed and drawn is not None:
        report.sections.append(("random seed", f"{SEED_ENV}={drawn} replays this test's inputs"))
    if item.config.getoption("compile_times"):
        # This phase's compile seconds (setup, call or teardown), then start counting anew.
        report.user_properties.append((COMPILE_PROPERTY, _compile_seconds[0]))
        _compile_seconds[0] = 0.0


# `--compile-times`: how much of each file's time is XLA compiling (jax's own compile event,
# which a persistent-cache hit also reports, with the time the load took), in this process:
# what `vmp train` and the other subprocesses compile is not counted.
COMPILE_PROPERTY = "xla_compile_s"
_compile_seconds = [0.0]  # since the last report, in this process


def pytest_addoption(parser):
    parser.addoption(
        "--compile-times",
        action="store_true",
        help="print each test file's XLA compile seconds beside its total (tests/README.md)",
    )


def pytest_configure(config):
    if config.getoption("compile_times"):
        import jax.monitoring

        def on_duration(event: str, seconds: float, **_) -> None:
            if event == "/jax/core/compile/backend_compile_duration":
                _compile_seconds[0] += seconds

        jax.monitoring.register_event_duration_secs_listener(on_duration)


def pytest_terminal_summary(terminalreporter, config):
    if not config.getoption("compile_times"):
        return
    total, compiling = collections.Counter(), collections.Counter()
    for reports in terminalreporter.stats.values():
        for report in reports:
            if isinstance(report, pytest.TestReport):
                file = report.nodeid.split("::")[0]
                total[file] += report.duration
                compiling[file] += dict(report.user_properties).get(COMPILE_PROPERTY, 0.0)
    terminalreporter.write_sep("=", "XLA compile time in the test processes, per file")
    terminalreporter.write_line("| file | tests s | of which compiling s |")
    terminalreporter.write_line("|---|---:|---:|")
    for file, seconds in total.most_common():
        terminalreporter.write_line(f"| {file} | {seconds:.0f} | {compiling[file]:.0f} |")
    all_s, all_c = sum(total.values()), sum(compiling.values())
    terminalreporter.write_line(f"| all | {all_s:.0f} | {all_c:.0f} ({all_c / all_s:.0%}) |")


# The files that take longest (their sums in tests/README.md), run first: `make test` hands
# whole files to its two workers in collection order (--no-loadscope-reorder: by default xdist
# orders files by their number of tests instead), and a long file started last would leave one
# worker idle.
SLOWEST_FIRST = (
    "tests/compile/test_gpu.py",
    "tests/multihost/test_multihost.py",
    "tests/ssm/test_algorithms.py",
    "tests/compile/test_tpu.py",
    "tests/models/test_model.py",
    "tests/train/test_train_cli.py",
    "tests/pallas/test_selective_scan_tpu.py",
    "tests/engine/test_sharding.py",
    "tests/pallas/test_selective_scan.py",
    "tests/test_cli.py",
    "tests/train/test_diagnostics.py",
    "tests/interop/test_torch_model.py",
    "tests/train/test_bench_train.py",
    "tests/train/test_ava_train.py",
    "tests/multihost/test_ava_multihost.py",
    "tests/models/test_bfloat16_long.py",
    "tests/interop/test_import.py",
    "tests/evaluate/test_predict.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(SLOWEST_FIRST)}
    root = config.rootpath

    def file_rank(item):
        return rank.get(item.path.relative_to(root).as_posix(), len(rank))

    items.sort(key=file_rank)  # stable: the order within and among other files is kept


@pytest.fixture(scope="session")
def motion_dataset(tmp_path_factory) -> str:
    """4 classes x 8 videos of 16 frames at 48 px: 24 train and 8 val videos (data_root;
    train.txt and val.txt inside)."""
    from vmp_jax.data import synthetic

    root = str(tmp_path_factory.mktemp("motion"))
    spec = synthetic.Spec(root, 4, 8, frames=16, height=48, width=48, val_fraction=0.25)
    synthetic.make_dataset(spec, workers=1)
    return root


@pytest.fixture(scope="session")
def gcs():
    """A Google Cloud Storage emulator on 127.0.0.1 with the bucket `vmp-test`, and every
    client library aimed at it (`vmp_devtools.gcs_emulator.environment`) in this process and
    in every process started from here on; stopped, and the variables restored, at the end."""
    from vmp_devtools.gcs_emulator import Emulator

    with Emulator("vmp-test") as emulator:
        before = emulator.use_in_this_process()
        try:
            yield emulator
        finally:
            emulator.restore(before)


@pytest.fixture(scope="session")
def bucket_dataset(gcs, motion_dataset) -> str:
    """The motion dataset copied to gs://vmp-test/motion (lists, videos, classes.txt)."""
    from vmp_jax import storage

    storage.upload(motion_dataset, "gs://vmp-test/motion")
    return "gs://vmp-test/motion"
