"""`vmp --help` lists the commands by group, in the order a user meets them, every registered
command once: a command no group names is listed too, under "other commands"."""

import argparse
import re

import pytest

from vmp_jax import cli

ORDER = ["prepare data", "train", "evaluate and predict", "the model", "weights"]
ORDER += ["accelerators", "benchmarks"]


def _help(capsys) -> str:
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def _registered() -> list[str]:
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(commands.choices)


def _listing(text: str) -> dict[str, list[str]]:
    """{group heading: its commands} of the help's grouped listing."""
    groups, group = {}, None
    for line in text.split("options:", 1)[1].splitlines():
        if heading := re.fullmatch(r"(\S.*):", line):
            group = groups.setdefault(heading[1], [])
        elif group is not None and (command := re.match(r"  (\S+)\s{2,}\S", line)):
            group.append(command[1])
    return groups


def test_help_lists_every_command_by_group_in_order(capsys):
    text = _help(capsys)
    assert text.startswith("usage: vmp [-h] COMMAND ...")
    assert "{" not in text.splitlines()[0]  # no brace list of every name
    groups = _listing(text)
    assert list(groups) == ORDER, "a command no group names: add it to vmp_jax.cli.GROUPS"
    listed = [c for commands in groups.values() for c in commands]
    assert sorted(listed) == sorted(_registered()) and len(set(listed)) == len(listed)
    assert groups["prepare data"][:1] == ["make-synthetic"] and "compile" in groups["accelerators"]


def test_a_command_no_group_names_is_listed_last(capsys, monkeypatch):
    groups = {g: tuple(c for c in names if c != "compile") for g, names in cli.GROUPS.items()}
    monkeypatch.setattr(cli, "GROUPS", groups)
    listing = _listing(_help(capsys))
    assert list(listing)[-1] == cli.OTHER and "compile" in listing[cli.OTHER]
    assert "compile" not in listing["accelerators"]
    assert sorted(c for commands in listing.values() for c in commands) == sorted(_registered())
