"""Every `vmp` command line written in README.md and docs/ parses with the real command line, so
the docs cannot drift from the CLI: a renamed flag or subcommand fails here. Every link to a
file of the repository resolves."""

import re
import shlex

import pytest

from vmp_jax import cli
from vmp_jax.experiment import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
PAGES_WITH_LINKS = [
    *PAGES,
    REPO_ROOT / "tests" / "README.md",
    REPO_ROOT / "benchmarks" / "RESULTS.md",
]
# What may stand before `vmp` on a line: a prompt, SLURM's launcher, the venv's path.
PREFIX = re.compile(r"^(?:\S*\$ )?(?:srun .*?\\?\s*)?(?:\.venv/bin/)?(?=vmp )")


def command_lines(text: str) -> list[str]:
    """The `vmp ...` commands of a page's fenced code blocks, continuation lines joined and
    comments dropped."""
    commands = []
    for language, block in re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
        if language not in ("bash", "sh", ""):
            continue
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = PREFIX.sub("", line.strip())
            if line.startswith("vmp "):
                commands.append(shlex.split(line, comments=True))
    return commands


def inline_commands(text: str) -> set[str]:
    """Subcommands named in inline code (`vmp eval`, `vmp gpu-compile kernels ...`)."""
    return set(re.findall(r"`vmp ([a-z][a-z0-9-]*)", text))


def _parse(argv: list[str]) -> None:
    """Parse as `vmp` does (cli.main): --config.KEY=VALUE overrides where the command takes
    them, nothing else unknown. argparse exits on an error."""
    parser = cli.build_parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if not a.startswith("--config.")]
    assert not unknown, f"unknown arguments {unknown} in: vmp {shlex.join(argv)}"
    if any(a.startswith("--config.") for a in extra):
        assert getattr(args, "accepts_overrides", False), f"no overrides: {shlex.join(argv)}"


ALL = [(page.name, argv) for page in PAGES for argv in command_lines(page.read_text())]


def test_the_pages_hold_commands():
    assert len(ALL) >= 40 and {page.name for page in PAGES} >= {"README.md", "scan.md"}


@pytest.mark.parametrize(("page", "argv"), ALL, ids=[f"{p}: {' '.join(a[:2])}" for p, a in ALL])
def test_every_command_line_parses(page, argv):
    _parse(argv[1:])


def test_every_subcommand_named_exists_and_has_help(capsys):
    named = set().union(*(inline_commands(page.read_text()) for page in PAGES))
    named |= {argv[1] for _, argv in ALL}
    for command in sorted(named):
        with pytest.raises(SystemExit) as done:
            cli.build_parser().parse_args([command, "--help"])
        assert done.value.code == 0, f"vmp {command} --help"
        assert f"usage: vmp {command}" in capsys.readouterr().out


def test_a_drifted_command_is_caught():
    with pytest.raises(SystemExit):
        _parse(["train", "--config", "configs/demo.py", "--work-dir", "runs/x"])
    page = "```python\nx = 1\n```\n\n```bash\n"
    page += "vmp eval --config c \\\n  --checkpoint runs/x  # note\n```\n"
    assert command_lines(page) == [["vmp", "eval", "--config", "c", "--checkpoint", "runs/x"]]


def local_links(text: str) -> list[str]:
    """The targets of a page's Markdown links and images that are files of the repository (no
    URL, no in-page anchor), anchors dropped."""
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:|#", t)]


@pytest.mark.parametrize("page", PAGES_WITH_LINKS, ids=lambda p: p.name)
def test_every_local_link_resolves(page):
    broken = [t for t in local_links(page.read_text()) if not (page.parent / t).exists()]
    assert not broken, f"{page.name} links to missing files: {broken}"


def test_a_broken_link_is_caught():
    text = "[a](docs/x.md#part) [b](https://x.org) [c](#here) ![d](../img.png)"
    assert local_links(text) == ["docs/x.md", "../img.png"]


def readme_table_commands(text: str) -> list[str]:
    """The commands the rows of README's command table open with, in the table's order
    (`vmp export` / `vmp import`: both)."""
    rows = re.findall(r"^\| (`vmp [^|]*?) \|", text, re.M)
    return [name for row in rows for name in re.findall(r"`vmp ([a-z][a-z0-9-]*)`", row)]


def test_readme_table_lists_the_commands_in_the_help_order():
    """README's table and `vmp --help` group the commands alike: the table's rows in GROUPS'
    order, every grouped command named in the table (an alias may be named in a row's text)."""
    text = (REPO_ROOT / "README.md").read_text()
    table = readme_table_commands(text)
    grouped = [name for names in cli.GROUPS.values() for name in names]
    assert len(table) >= 20 and set(table) <= set(grouped), table
    assert table == [name for name in grouped if name in table], (table, cli.GROUPS)
    table_text = text[text.index("| command | what it does |") :].split("\n\n")[0]
    assert set(grouped) <= inline_commands(table_text), set(grouped) - inline_commands(table_text)
