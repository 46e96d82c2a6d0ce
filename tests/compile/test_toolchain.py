"""The toolchain installer: two compiles started at once install a toolchain once (a file lock
beside its folder), with a fake pip that takes its time, so no real install runs."""

import os
import sys
import textwrap
import threading

from vmp_jax.compile import toolchain

FAKE_PIP = """\
import os, sys, time

args = sys.argv[1:]
folder = args[args.index("--target") + 1]
with open(os.environ["FAKE_PIP_LOG"], "a") as log:
    log.write(" ".join([sys.executable, *args]) + "\\n")  # which python ran it, and how
time.sleep(1)  # an install takes a while: a second installer without the lock would start too
os.makedirs(folder, exist_ok=True)
with open(os.path.join(folder, "libtpu.so"), "w") as f:
    f.write("fake")
"""


def test_two_installers_at_once_install_once(tmp_path, monkeypatch):
    fake = tmp_path / "fake"
    (fake / "pip").mkdir(parents=True)
    (fake / "pip" / "__init__.py").write_text("")
    (fake / "pip" / "__main__.py").write_text(textwrap.dedent(FAKE_PIP))
    log = tmp_path / "pip.log"
    folder = tmp_path / "venv" / "tpu-toolchain"
    monkeypatch.setenv("FAKE_PIP_LOG", str(log))
    monkeypatch.setenv("VMP_TPU_TOOLCHAIN", str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")]))
    libtpu = toolchain.TOOLCHAINS["tpu"]
    said = {0: [], 1: []}
    done = {}
    start = threading.Barrier(2)

    def install(i):
        start.wait()
        done[i] = libtpu.install(echo=said[i].append)

    threads = [threading.Thread(target=install, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert done == {0: str(folder), 1: str(folder)}
    installs = log.read_text().splitlines()
    assert len(installs) == 1, installs  # the second waited on the lock, then found it there
    assert installs[0].endswith(f"--target {folder} {libtpu.requirements()[0]}")
    assert sorted(map(len, said.values())) == [0, 1]  # one said it installs, the other nothing
    assert libtpu.installed() and (folder / "libtpu.so").is_file()
    assert (tmp_path / "venv" / "tpu-toolchain.lock").is_file()  # beside the folder
    # the fake ran as `<this python> -m pip install`, as a real install would
    assert installs[0].startswith(f"{sys.executable} install "), installs
