"""`vmp` starts without jax where it does not need it: building the parser, `vmp --help`, every
command's (and subcommand's) `--help`, and `vmp launch` itself (the parent that only starts
processes) import none of jax, flax, orbax, grain or tensorflow, which cost about 2 s of CPU at
every start (the suite starts `vmp` as a subprocess many times). The constants the parsers list
live in light modules (vmp_jax.train.variants, vmp_jax.evaluate.weights,
vmp_jax.compile.recipes); the heavy modules are imported inside the commands."""

import json
import subprocess
import sys

# Run in a fresh interpreter: this process has long imported jax (conftest, other tests).
SCRIPT = r"""
import argparse, contextlib, io, json, sys
from vmp_jax import cli

def commands(parser, path=()):
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))

helps = {}
for path in commands(cli.build_parser()):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            cli.main([*path, "--help"])
        except SystemExit as done:
            helps[" ".join(path)] = (done.code, out.getvalue().startswith("usage: vmp"))
launched = cli.main(["launch", "--processes", "1", "--", sys.executable, "-c", "pass"])
heavy = ("jax", "flax", "orbax", "grain", "tensorflow")
imported = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
print(json.dumps({"helps": helps, "launched": launched, "imported": imported}))
"""


def test_parser_every_help_and_launch_import_no_jax():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    helps = result["helps"]
    assert {"", "launch", "train", "ablate", "eval", "predict", "compile table"} <= set(helps)
    assert all(h == [0, True] for h in helps.values()), helps  # each printed its usage, exit 0
    assert result["launched"] == 0
    assert not result["imported"], f"imported at start: {result['imported'][:8]}"
